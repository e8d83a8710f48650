"""The choices and limits the command line offers for export and the server, in a module that imports nothing, so
that ``mlp-mixer export --help`` and ``mlp-mixer serve --help`` load no torch or web framework. :mod:`.export` and
:mod:`.serve` read them from here."""

EXPORT_FORMATS = ("onnx", "torchscript", "exported-program")
BACKENDS = ("torch", "onnx")  # what serve runs the model with
DEFAULT_MODEL_NAME = "mlp-mixer"  # the {name} of /v2/models/{name}; KServe passes its InferenceService's name
DEFAULT_MAX_BODY_MB = 16.0  # a few phone photos; raise it for big batches of large images
DEFAULT_MAX_PIXELS = 40_000_000  # 40 Mpx (e.g. 7300x5500): above any camera, below what would exhaust memory
# All the images of one request together: eight 12 Mpx photos. Decoding 100 Mpx costs about a second of one core,
# so one request cannot hold the decoder for minutes (32 images of 40 Mpx each would).
DEFAULT_MAX_REQUEST_PIXELS = 100_000_000
DEFAULT_MAX_IMAGES = 32
# Requests admitted at once (reading, parsing, decoding or waiting for the model); the next gets 503 Retry-After.
DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_INFLIGHT_MB = 512.0  # request bodies held in memory at once, all requests together
DEFAULT_MAX_CONNECTIONS = 1000  # open connections; at the cap the oldest idle one makes room, or the new one gets 503
DEFAULT_HEADER_TIMEOUT_S = 10.0  # from a connection's (or a keep-alive request's) first byte to its last header
# An idle keep-alive connection's life after a response: longer than the idle expiry of the usual clients (httpx
# 5 s, aiohttp 15 s), so a client never sends a request on a connection the server is closing at that instant
# (uvicorn's own 5 s equals httpx's: the two closes crossed, and httpx reported a ReadError on a POST it cannot
# retry). Idle connections are the first evicted at the connection cap, so a longer life costs no availability.
DEFAULT_KEEP_ALIVE_S = 20.0
DEFAULT_BODY_TIMEOUT_S = 60.0  # from the last header to the last byte of the body: 16 MB at 0.27 MB/s
DEFAULT_DRAIN_TIMEOUT_S = 30.0  # after SIGTERM, the longest the process stays up, requests in flight included
