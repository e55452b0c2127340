"""The gRPC services (PredictionService, ModelService) over a ModelManager, on asyncio.

Parsing, validation and responses run on the event loop (~30 us); TensorFlow runs in the
model executor and reloads in the admin executor, so a model load never blocks the loop and a
model call blocks it only when the batcher runs a lone one-row request there (under 2 ms, and
only while no other request is about: ``recflow.serving.async_batcher.AsyncBatcher``). The
handlers are plain classes; ``build_servicers`` binds them to the generated servicer bases
(which import TensorFlow, so only when a server starts).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Hashable, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, NoReturn

from recflow.serving.async_batcher import AsyncBatcher
from recflow.serving.batching import BatchingOptions
from recflow.serving.limits import RequestLimits
from recflow.serving.server.manager import ModelManager
from recflow.serving.server.servable import Arrays, PreparedRequest, Servable, ServableError

if TYPE_CHECKING:
    import grpc
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

log = logging.getLogger("recflow.serving.server")

Batch = tuple[Servable, PreparedRequest]


async def _abort(context: grpc.aio.ServicerContext, exc: ServableError) -> NoReturn:
    import grpc

    await context.abort(getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN), exc.message)
    raise AssertionError("grpc context.abort returned")  # it raises; keeps type checkers honest


def _run_merged(
    key: Hashable, items: Sequence[Batch], batching: BatchingOptions | None = None
) -> list[Arrays]:
    return items[0][0].run_batch([prepared for _, prepared in items], batching)


class PredictionHandlers:
    """Predict (batched when ``batching`` is given) and GetModelMetadata."""

    def __init__(
        self,
        manager: ModelManager,
        model_executor: futures.Executor,
        batching: BatchingOptions | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        self._manager = manager
        self._executor = model_executor
        self._limits = limits
        self._metrics = manager.metrics
        self._batcher: AsyncBatcher[Batch, Arrays] | None = None
        if batching is not None:
            self._batcher = AsyncBatcher(
                functools.partial(_run_merged, batching=batching),
                batching,
                model_executor,
                on_batch=self._metrics.observe_batch,
            )

    async def _outputs(self, servable: Servable, prepared: PreparedRequest) -> Arrays:
        if self._batcher is not None and prepared.rows is not None:
            key = (id(servable), *prepared.batch_key())
            return await self._batcher.submit(key, (servable, prepared), prepared.rows)
        loop = asyncio.get_running_loop()
        single = await loop.run_in_executor(self._executor, servable.run_batch, [prepared])
        return single[0]

    async def Predict(  # noqa: N802 (the RPC's name)
        self, request: PredictRequest, context: grpc.aio.ServicerContext
    ) -> PredictResponse:
        started = time.perf_counter()
        name = request.model_spec.name
        try:
            servable = self._manager.servable(request.model_spec)
            prepared = servable.prepare(request, self._limits)
            response = servable.respond(prepared, await self._outputs(servable, prepared))
        except ServableError as exc:  # QueueFull included
            failure = ServableError(exc.code, exc.message)
        else:
            self._metrics.observe(name, "Predict", "OK", time.perf_counter() - started)
            return response
        self._metrics.observe(name, "Predict", failure.code, time.perf_counter() - started)
        # Abort outside the except block and without the request in this frame: the abort's
        # exception (and anything that keeps it) must not keep a large request alive.
        request = None
        await _abort(context, failure)

    async def GetModelMetadata(  # noqa: N802 (the RPC's name)
        self, request: GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> GetModelMetadataResponse:
        try:
            if not request.metadata_field:
                raise ServableError(
                    "INVALID_ARGUMENT",
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            for fld in request.metadata_field:
                if fld != "signature_def":
                    raise ServableError(
                        "INVALID_ARGUMENT", f"Metadata field {fld} is not supported"
                    )
            servable = self._manager.servable(request.model_spec)
        except ServableError as exc:
            await _abort(context, exc)
        return _metadata_response(servable)


def _metadata_response(servable: Servable) -> GetModelMetadataResponse:
    from tensorflow_serving.apis import get_model_metadata_pb2

    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    sigs = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in servable.signature_defs.items():
        sigs.signature_def[key].CopyFrom(sig)
    response.metadata["signature_def"].Pack(sigs)
    return response


class ModelHandlers:
    """GetModelStatus and HandleReloadConfigRequest (the reload runs in ``admin_executor``)."""

    def __init__(self, manager: ModelManager, admin_executor: futures.Executor) -> None:
        self._manager = manager
        self._executor = admin_executor

    async def GetModelStatus(  # noqa: N802 (the RPC's name)
        self, request: GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> GetModelStatusResponse:
        from tensorflow_serving.apis import get_model_status_pb2

        try:
            rows = self._manager.status(request.model_spec)
        except ServableError as exc:
            await _abort(context, exc)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, error in rows:
            item = response.model_version_status.add(version=version, state=state)
            if error:
                item.status.error_code = 2  # tensorflow.error.UNKNOWN
                item.status.error_message = error
        return response

    async def HandleReloadConfigRequest(  # noqa: N802 (the RPC's name)
        self, request: ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> ReloadConfigResponse:
        from tensorflow_serving.apis import model_management_pb2

        loop = asyncio.get_running_loop()
        try:  # loading takes seconds: off the loop, so Predicts keep being served
            await loop.run_in_executor(self._executor, self._manager.reload, request.config)
        except ServableError as exc:
            log.error("HandleReloadConfigRequest failed: %s", exc.message)
            await _abort(context, exc)
        return model_management_pb2.ReloadConfigResponse()


def add_services(
    server: grpc.aio.Server,
    manager: ModelManager,
    model_executor: futures.Executor,
    admin_executor: futures.Executor,
    batching: BatchingOptions | None = None,
    limits: RequestLimits | None = None,
) -> None:
    """Register both services on ``server``; the generated bases answer the RPCs not
    implemented here (Classify, Regress, MultiInference) with UNIMPLEMENTED."""
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class PredictionService(
        PredictionHandlers, prediction_service_pb2_grpc.PredictionServiceServicer
    ):
        pass

    class ModelService(ModelHandlers, model_service_pb2_grpc.ModelServiceServicer):
        pass

    prediction = PredictionService(manager, model_executor, batching, limits)
    models = ModelService(manager, admin_executor)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
