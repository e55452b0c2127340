/* predictd's answers, built from a batch's output tensors. */
#ifndef PREDICTD_RESPONSE_H
#define PREDICTD_RESPONSE_H

#include <grpc/grpc.h>

#include "servables.h"

/* Row ``row`` of every output of a batch of ``rows`` rows, as a serialized PredictResponse
 * naming the servable's model, version and the signature serving_default. */
grpc_byte_buffer *response(const Servable *sv, TF_Tensor **values, int rows, int row);

#endif
