"""The defaults the command line shows for looking at a model, in a module that imports nothing, so that
``mlp-mixer fewshot --help`` loads no torch. :mod:`.fewshot` reads them from here."""

L2_REG = 2.0**10  # few-shot ridge penalty: big_vision's few-shot configs (configs/common_fewshot.py)
