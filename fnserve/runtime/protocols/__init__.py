"""The HTTP protocols over one runtime: native /function, Open Inference Protocol v2, TF Serving."""
