"""The ``local`` target: everything on this machine, as plain processes.

platform     replicas as runtime processes (``python -m fnserve.runtime``), state in
             .fnserve/deploy/state.json: the gateway's default target
training     ``fn train NAME``: a function's train.py, here
"""
