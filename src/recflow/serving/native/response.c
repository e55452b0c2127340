/* predictd's answers: one row of a batch's outputs as a serialized PredictResponse (response.h). */
#include "response.h"

#include <stdlib.h>

#include "tensorflow_serving/apis/predict.pb-c.h"

/* Row ``row`` of every output, as a serialized PredictResponse. */
grpc_byte_buffer *response(const Servable *sv, TF_Tensor **values, int rows, int row) {
  Tensorflow__Serving__PredictResponse resp = TENSORFLOW__SERVING__PREDICT_RESPONSE__INIT;
  Tensorflow__Serving__ModelSpec spec = TENSORFLOW__SERVING__MODEL_SPEC__INIT;
  Google__Protobuf__Int64Value version = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
  Tensorflow__Serving__PredictResponse__OutputsEntry entries[MAX_OUTPUTS], *entry_ptrs[MAX_OUTPUTS];
  Tensorflow__TensorProto tensors[MAX_OUTPUTS];
  Tensorflow__TensorShapeProto shapes[MAX_OUTPUTS];
  Tensorflow__TensorShapeProto__Dim dims[MAX_OUTPUTS][8], *dim_ptrs[MAX_OUTPUTS][8];
  ProtobufCBinaryData *strings[MAX_OUTPUTS] = {0};
  version.value = sv->version;
  spec.name = sv->name;
  spec.signature_name = "serving_default";
  spec.version_choice_case = TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION;
  spec.version = &version;
  resp.model_spec = &spec;
  for (int k = 0; k < sv->n_outputs; k++) {
    TF_Tensor *v = values[k];
    int nd = p_TF_NumDims(v);
    int64_t per_row = 1;
    tensorflow__serving__predict_response__outputs_entry__init(&entries[k]);
    tensorflow__tensor_proto__init(&tensors[k]);
    tensorflow__tensor_shape_proto__init(&shapes[k]);
    for (int d = 0; d < nd && d < 8; d++) {
      tensorflow__tensor_shape_proto__dim__init(&dims[k][d]);
      dims[k][d].size = d == 0 ? 1 : p_TF_Dim(v, d);
      if (d) per_row *= dims[k][d].size;
      dim_ptrs[k][d] = &dims[k][d];
    }
    shapes[k].n_dim = nd;
    shapes[k].dim = dim_ptrs[k];
    tensors[k].tensor_shape = &shapes[k];
    tensors[k].dtype = (Tensorflow__DataType)p_TF_TensorType(v);
    if (p_TF_TensorType(v) == TF_STRING) {
      TF_TString *s = (TF_TString *)p_TF_TensorData(v) + row * per_row;
      strings[k] = malloc(per_row * sizeof(ProtobufCBinaryData));
      for (int64_t j = 0; j < per_row; j++) {
        strings[k][j].data = (uint8_t *)TF_TString_GetDataPointer(&s[j]);
        strings[k][j].len = TF_TString_GetSize(&s[j]);
      }
      tensors[k].n_string_val = per_row;
      tensors[k].string_val = strings[k];
    } else {
      size_t row_bytes = p_TF_TensorByteSize(v) / rows;
      tensors[k].tensor_content.data = (uint8_t *)p_TF_TensorData(v) + row * row_bytes;
      tensors[k].tensor_content.len = row_bytes;
    }
    entries[k].key = sv->output_keys[k];
    entries[k].value = &tensors[k];
    entry_ptrs[k] = &entries[k];
  }
  resp.n_outputs = sv->n_outputs;
  resp.outputs = entry_ptrs;
  size_t len = tensorflow__serving__predict_response__get_packed_size(&resp);
  grpc_slice slice = grpc_slice_malloc(len);
  tensorflow__serving__predict_response__pack(&resp, GRPC_SLICE_START_PTR(slice));
  grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);
  for (int k = 0; k < sv->n_outputs; k++) free(strings[k]);
  return buffer;
}
