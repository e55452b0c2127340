"""The two TF Serving service stubs ``ServingClient`` calls, as protocols it can be given.

``grpc_stubs`` makes the generated stubs over a channel (the default); tests hand the client
fakes that answer from a queue instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

import grpc

if TYPE_CHECKING:
    from tensorflow_serving.apis.get_model_metadata_pb2 import (
        GetModelMetadataRequest,
        GetModelMetadataResponse,
    )
    from tensorflow_serving.apis.get_model_status_pb2 import (
        GetModelStatusRequest,
        GetModelStatusResponse,
    )
    from tensorflow_serving.apis.model_management_pb2 import (
        ReloadConfigRequest,
        ReloadConfigResponse,
    )
    from tensorflow_serving.apis.predict_pb2 import PredictRequest, PredictResponse

Req = TypeVar("Req", contravariant=True)
Resp = TypeVar("Resp", covariant=True)


class Rpc(Protocol[Req, Resp]):
    """One unary call of a stub: ``stub.Predict(request, timeout=...)``."""

    def __call__(self, request: Req, /, *, timeout: float) -> Resp: ...


class PredictionStub(Protocol):
    """The calls of TF Serving's ``PredictionServiceStub`` the client makes."""

    def Predict(self, request: PredictRequest, timeout: float) -> PredictResponse: ...  # noqa: N802

    def GetModelMetadata(  # noqa: N802
        self, request: GetModelMetadataRequest, timeout: float
    ) -> GetModelMetadataResponse: ...


class ModelStub(Protocol):
    """The calls of TF Serving's ``ModelServiceStub`` the client makes."""

    def GetModelStatus(  # noqa: N802
        self, request: GetModelStatusRequest, timeout: float
    ) -> GetModelStatusResponse: ...

    def HandleReloadConfigRequest(  # noqa: N802
        self, request: ReloadConfigRequest, timeout: float
    ) -> ReloadConfigResponse: ...


class Stubs(NamedTuple):
    prediction: PredictionStub
    models: ModelStub


StubFactory = Callable[[grpc.Channel], Stubs]


def grpc_stubs(channel: grpc.Channel) -> Stubs:
    """TF Serving's generated stubs over ``channel`` (the default ``StubFactory``)."""
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    return Stubs(
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
