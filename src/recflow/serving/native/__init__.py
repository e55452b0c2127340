"""The local model server's native front end (``--native_frontend``).

``predictd`` (the C sources here: gRPC's C core and TensorFlow's C API) takes the server's
public address and answers the common Predict itself, a user id per request batched as requests
queue, with no Python on the request path; every other request and RPC goes unchanged to the
Python server, which listens on a loopback port behind it and stays the judge of everything
unusual. The model manager publishes every change of versions and labels to it before the
change is reported done, and its counts are part of the server's Prometheus metrics.
"""

from recflow.serving.native.build import predictd_binary
from recflow.serving.native.frontend import NativeFrontend, native_tensors, table_lines

__all__ = ["NativeFrontend", "native_tensors", "predictd_binary", "table_lines"]
