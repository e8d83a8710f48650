"""The choices the command line offers for converting and resizing weights, in a module that imports nothing, so
that ``mlp-mixer convert --help`` and ``mlp-mixer resize --help`` load no torch. :mod:`.load` and :mod:`.resize`
read them from here."""

CONVERT_FORMATS = ("mlp-mixer", "timm", "npz")  # convert(to=...): our save_pretrained folder, timm's, official .npz
RESIZE_METHODS = ("auto", "blockdiag", "blockdiag-strided", "interpolate")  # resize_checkpoint(method=...)
