"""The inference service: FastAPI + ONNX Runtime, never torch.

``main`` builds the app and ``cli`` runs it (``scene-serve``); ``api`` is the HTTP
layer (dependencies, middleware, one router per concern); ``settings`` the one
configuration class; ``state`` what a running app holds; ``runtime`` the ORT session;
``batching`` the micro-batcher; ``upload`` reads request bodies within limits;
``pipeline`` the request stages; ``postprocess`` groups instances (``votes``,
``peaks``, ``optics``, ``instances``); ``encoding`` the PNGs; ``schemas`` the response
models; ``metrics`` every Prometheus metric; ``errors`` the JSON error table.
"""
