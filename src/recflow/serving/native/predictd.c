/* The local model server's native front end (``--native_frontend``): TF Serving's Predict RPC
 * served by gRPC's C core and TensorFlow's C API, with no Python on the request path, in front of
 * the Python server. recflow.serving.native builds it, starts it and keeps its table in step.
 *
 * Serves natively only the common request: Predict on a servable of its table (servables.h:
 * standard input sets it), by name and version, label or none (the latest), signature
 * serving_default, one input tensor of one string (the serving contract's user_id), no output
 * filter. Every other request, and every other RPC, is forwarded unchanged to BACKEND (the local
 * model server) and its answer relayed, status and message included, so the local server stays
 * the judge of everything unusual; BACKEND "-" refuses them instead. Requests larger than
 * MAX_RECEIVE_BYTES are refused by gRPC itself, as the local server's are. Native requests are
 * batched as they queue (a free worker takes the oldest and everything waiting for the same
 * servable, up to MAX_BATCH rows), padded to the smallest of PAD_SIZES holding them ("-": no
 * padding), as the local server's allowed_batch_sizes do; more than MAX_QUEUED waiting calls are
 * refused with UNAVAILABLE, as its batch queue refuses them. Request counts and latencies (on
 * LATENCY_BOUNDS microseconds) are kept for the Python server's metrics (stats.h).
 *
 * usage: predictd ADDRESS BACKEND MAX_RECEIVE_BYTES WORKERS MAX_BATCH MAX_QUEUED PAD_SIZES
 *        LATENCY_BOUNDS; then commands on standard input (servables.h): its table, and
 *        "listen" once the table is set, so the port opens ready to serve it. */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "response.h"
#include "servables.h"
#include "stats.h"
#include "tensorflow_serving/apis/predict.pb-c.h"

#define OUTSTANDING 128 /* calls the server accepts before a worker has taken any */
#define MAX_ID 256
#define MAX_PAD_SIZES 32

/* One incoming call; it is also its own completion-queue tag, so ``state`` says which step of
 * its life just completed. */
enum State { ACCEPTED_PREDICT, ACCEPTED_OTHER, RECEIVED, FORWARDED, REPLIED };

typedef struct Call {
  enum State state;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_call_details details; /* the method of an ACCEPTED_OTHER call */
  grpc_metadata_array metadata;
  grpc_byte_buffer *payload;
  grpc_byte_buffer *reply;
  int cancelled;
  /* forwarding to the backend */
  grpc_call *backend_call;
  grpc_metadata_array backend_initial, backend_trailing;
  grpc_status_code backend_status;
  grpc_slice backend_details; /* also the details of a status predictd makes itself */
  int other; /* accepted as an unregistered call: details to release */
  Servable *servable; /* a natively served call's, referenced */
  double started_us; /* when the call was accepted, for its latency */
  char user[MAX_ID];
  size_t user_len;
  struct Call *next;
} Call;

static grpc_server *server;
static grpc_completion_queue *cq;
static void *predict_method;
static const char *PREDICT = "/tensorflow.serving.PredictionService/Predict";
static grpc_channel *backend; /* NULL: refuse what is not served natively */
static int max_batch, max_queued, n_pad_sizes;
static int pad_sizes[MAX_PAD_SIZES];

static pthread_mutex_t queue_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cv = PTHREAD_COND_INITIALIZER;
static Call *queue_head, *queue_tail;
static int queued; /* calls in the queue; guarded by queue_mu */

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* The smallest allowed size holding ``n`` rows; ``n`` itself above the largest or without any. */
static int64_t padded_rows(int n) {
  for (int i = 0; i < n_pad_sizes; i++)
    if (pad_sizes[i] >= n) return pad_sizes[i];
  return n;
}

static void accept_predict(void) {
  Call *c = calloc(1, sizeof(Call));
  c->state = ACCEPTED_PREDICT;
  c->backend_details = grpc_empty_slice();
  grpc_metadata_array_init(&c->metadata);
  if (grpc_server_request_registered_call(server, predict_method, &c->call, &c->deadline,
                                          &c->metadata, &c->payload, cq, cq, c) != GRPC_CALL_OK)
    die("grpc_server_request_registered_call failed", NULL);
}

static void accept_other(void) {
  Call *c = calloc(1, sizeof(Call));
  c->state = ACCEPTED_OTHER;
  c->other = 1;
  c->backend_details = grpc_empty_slice();
  grpc_metadata_array_init(&c->metadata);
  grpc_call_details_init(&c->details);
  if (grpc_server_request_call(server, &c->call, &c->details, &c->metadata, cq, cq, c) !=
      GRPC_CALL_OK)
    die("grpc_server_request_call failed", NULL);
}

static void release(Call *c) {
  if (c->payload) grpc_byte_buffer_destroy(c->payload);
  if (c->reply) grpc_byte_buffer_destroy(c->reply);
  grpc_metadata_array_destroy(&c->metadata);
  if (c->other) grpc_call_details_destroy(&c->details);
  if (c->backend_call) {
    grpc_metadata_array_destroy(&c->backend_initial);
    grpc_metadata_array_destroy(&c->backend_trailing);
    grpc_call_unref(c->backend_call);
  }
  grpc_slice_unref(c->backend_details);
  if (c->servable) servable_unref(c->servable);
  if (c->call) grpc_call_unref(c->call);
  free(c);
}

static void reply_slice(Call *c, grpc_byte_buffer *message, grpc_status_code code,
                        grpc_slice details, int has_details) {
  grpc_op ops[4];
  memset(ops, 0, sizeof ops);
  int n = 0;
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (message) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = message;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = code;
  ops[n++].data.send_status_from_server.status_details = has_details ? &details : NULL;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
  c->reply = message;
  c->state = REPLIED;
  if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK)
    fprintf(stderr, "predictd: grpc_call_start_batch failed\n");
}

static void reply(Call *c, grpc_byte_buffer *message, grpc_status_code code, const char *detail) {
  grpc_slice_unref(c->backend_details);
  c->backend_details = grpc_slice_from_copied_string(detail ? detail : "");
  reply_slice(c, message, code, c->backend_details, detail != NULL);
}

/* The answer to a natively served call, counted in the metrics. */
static void reply_native(Call *c, grpc_byte_buffer *message, grpc_status_code code,
                         const char *detail) {
  stats_request(c->servable->name, code, now_us() - c->started_us);
  reply(c, message, code, detail);
}

/* Sends the call's request to the backend, same method and deadline (cancelled with it). */
static void forward(Call *c, grpc_slice method) {
  if (!backend) {
    reply(c, NULL, GRPC_STATUS_UNIMPLEMENTED, "predictd serves only one user id per Predict");
    return;
  }
  c->backend_call = grpc_channel_create_call(backend, c->call, GRPC_PROPAGATE_DEFAULTS, cq, method,
                                             NULL, c->deadline, NULL);
  grpc_metadata_array_init(&c->backend_initial);
  grpc_metadata_array_init(&c->backend_trailing);
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  int n = 0;
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (c->payload) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->payload;
  }
  ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[n++].data.recv_initial_metadata.recv_initial_metadata = &c->backend_initial;
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n++].data.recv_message.recv_message = &c->reply;
  ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[n].data.recv_status_on_client.trailing_metadata = &c->backend_trailing;
  ops[n].data.recv_status_on_client.status = &c->backend_status;
  ops[n++].data.recv_status_on_client.status_details = &c->backend_details;
  c->state = FORWARDED;
  if (grpc_call_start_batch(c->backend_call, ops, n, c, NULL) != GRPC_CALL_OK)
    die("forwarding: grpc_call_start_batch failed", NULL);
}

static void receive(Call *c) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->payload;
  c->state = RECEIVED;
  if (grpc_call_start_batch(c->call, &op, 1, c, NULL) != GRPC_CALL_OK)
    die("receiving: grpc_call_start_batch failed", NULL);
}

/* Whether the request is the one shape served natively; if so its servable and user id are kept. */
static int parse(Call *c) {
  grpc_byte_buffer_reader reader;
  if (!c->payload || !grpc_byte_buffer_reader_init(&reader, c->payload)) return 0;
  grpc_slice bytes = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  Tensorflow__Serving__PredictRequest *request = tensorflow__serving__predict_request__unpack(
      NULL, GRPC_SLICE_LENGTH(bytes), GRPC_SLICE_START_PTR(bytes));
  grpc_slice_unref(bytes);
  if (!request) return 0;
  const Tensorflow__Serving__ModelSpec *spec = request->model_spec;
  Servable *s = NULL;
  if (spec && (!spec->signature_name[0] || strcmp(spec->signature_name, "serving_default") == 0) &&
      request->n_output_filter == 0 && request->n_inputs == 1)
    s = servable_find(spec);
  if (s && s->session && strcmp(request->inputs[0]->key, s->input_key) == 0) {
    Tensorflow__TensorProto *t = request->inputs[0]->value;
    if (t && t->dtype == TENSORFLOW__DATA_TYPE__DT_STRING && t->tensor_shape &&
        t->tensor_shape->n_dim == 1 && t->tensor_shape->dim[0]->size == 1 &&
        t->n_string_val == 1 && t->string_val[0].len < MAX_ID && t->tensor_content.len == 0) {
      memcpy(c->user, t->string_val[0].data, t->string_val[0].len);
      c->user_len = t->string_val[0].len;
      c->servable = s;
      s = NULL;
    }
  }
  if (s) servable_unref(s);
  tensorflow__serving__predict_request__free_unpacked(request, NULL);
  return c->servable != NULL;
}

/* Takes the oldest queued call and every other queued call for its servable, up to max_batch. */
static int take_batch(Call **batch) {
  int n = 0;
  pthread_mutex_lock(&queue_mu);
  while (!queue_head) pthread_cond_wait(&queue_cv, &queue_mu);
  Servable *s = queue_head->servable;
  Call **link = &queue_head;
  queue_tail = NULL;
  while (*link) {
    Call *c = *link;
    if (c->servable == s && n < max_batch) {
      batch[n++] = c;
      *link = c->next;
      queued--;
    } else {
      queue_tail = c;
      link = &c->next;
    }
  }
  pthread_mutex_unlock(&queue_mu);
  return n;
}

static void *worker(void *unused) {
  (void)unused;
  TF_Status *status = p_TF_NewStatus();
  Call **batch = malloc(max_batch * sizeof(Call *));
  for (;;) {
    int n = take_batch(batch);
    Servable *s = batch[0]->servable;
    int64_t padded = padded_rows(n);
    stats_batch(n);
    TF_Tensor *in = p_TF_AllocateTensor(TF_STRING, &padded, 1, padded * sizeof(TF_TString));
    TF_TString *ids = (TF_TString *)p_TF_TensorData(in);
    for (int64_t i = 0; i < padded; i++) {
      Call *c = batch[i < n ? i : n - 1];
      TF_TString_Init(&ids[i]);
      TF_TString_Copy(&ids[i], c->user, c->user_len);
    }
    TF_Tensor *values[MAX_OUTPUTS] = {0};
    p_TF_SessionRun(s->session, NULL, &s->input, &in, 1, s->outputs, values, s->n_outputs, NULL,
                    0, NULL, status);
    p_TF_DeleteTensor(in);
    if (p_TF_GetCode(status) != TF_OK) {
      for (int i = 0; i < n; i++) reply_native(batch[i], NULL, GRPC_STATUS_INTERNAL, p_TF_Message(status));
      continue;
    }
    for (int i = 0; i < n; i++)
      reply_native(batch[i], response(s, values, (int)padded, i), GRPC_STATUS_OK, NULL);
    for (int k = 0; k < s->n_outputs; k++) p_TF_DeleteTensor(values[k]);
  }
  return NULL;
}

static const char *address;
static pthread_mutex_t listen_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t listen_cv = PTHREAD_COND_INITIALIZER;
static int listening;

/* The control loop's "listen" (servables.h): bind ADDRESS and start serving. The calls the
 * server accepts are requested once it has started, by main. */
int listen_now(void) {
  pthread_mutex_lock(&listen_mu);
  int port = 0;
  if (!listening) {
    grpc_server_credentials *credentials = grpc_insecure_server_credentials_create();
    port = grpc_server_add_http2_port(server, address, credentials);
    grpc_server_credentials_release(credentials);
    if (port) {
      grpc_server_start(server);
      listening = port;
      pthread_cond_signal(&listen_cv);
    }
  }
  pthread_mutex_unlock(&listen_mu);
  return port;
}

static void enqueue(Call *c) {
  char message[256];
  pthread_mutex_lock(&queue_mu);
  int full = queued >= max_queued && queue_head;
  if (full) {
    snprintf(message, sizeof message,
             "The batch scheduling queue is full (%d rows waiting, limit "
             "max_enqueued_batches*max_batch_size = %d); retry later or add capacity",
             queued, max_queued);
  } else {
    c->next = NULL;
    if (queue_tail) queue_tail->next = c; else queue_head = c;
    queue_tail = c;
    queued++;
    pthread_cond_signal(&queue_cv);
  }
  pthread_mutex_unlock(&queue_mu);
  if (full) reply_native(c, NULL, GRPC_STATUS_UNAVAILABLE, message);
}

int main(int argc, char **argv) {
  if (argc != 9)
    die("usage: predictd ADDRESS BACKEND MAX_RECEIVE_BYTES WORKERS MAX_BATCH MAX_QUEUED "
        "PAD_SIZES LATENCY_BOUNDS", NULL);
  load_tensorflow();
  const char *backend_address = argv[2];
  int max_receive = atoi(argv[3]);
  int workers = atoi(argv[4]);
  max_batch = atoi(argv[5]);
  max_queued = atoi(argv[6]);
  if (strcmp(argv[7], "-") != 0)
    for (char *save = NULL, *f = strtok_r(argv[7], ",", &save); f && n_pad_sizes < MAX_PAD_SIZES;
         f = strtok_r(NULL, ",", &save))
      pad_sizes[n_pad_sizes++] = atoi(f);
  stats_init(argv[8]);
  if (workers < 1 || max_batch < 1 || max_queued < 1) die("WORKERS, MAX_BATCH and MAX_QUEUED must be >= 1", NULL);

  grpc_init();
  if (strcmp(backend_address, "-") != 0) {
    /* The backend's answers are relayed whatever their size: the limit is the client's. */
    grpc_arg unlimited = {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = -1}};
    grpc_channel_args backend_args = {1, &unlimited};
    backend = grpc_channel_create(backend_address, grpc_insecure_credentials_create(), &backend_args);
  }
  grpc_arg limit = {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = max_receive}};
  grpc_channel_args server_args = {1, &limit};
  server = grpc_server_create(&server_args, NULL);
  cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(server, cq, NULL);
  predict_method = grpc_server_register_method(server, PREDICT, NULL,
                                               GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
  address = argv[1];
  for (int i = 0; i < workers; i++) {
    pthread_t thread;
    pthread_create(&thread, NULL, worker, NULL);
  }
  pthread_t control;
  pthread_create(&control, NULL, control_loop, NULL);
  pthread_mutex_lock(&listen_mu);
  while (!listening) pthread_cond_wait(&listen_cv, &listen_mu);
  pthread_mutex_unlock(&listen_mu);
  for (int i = 0; i < OUTSTANDING; i++) accept_predict();
  for (int i = 0; i < OUTSTANDING / 8; i++) accept_other();
  grpc_slice predict = grpc_slice_from_static_string(PREDICT);
  for (;;) {
    grpc_event event = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (event.type != GRPC_OP_COMPLETE) continue;
    Call *c = event.tag;
    switch (c->state) {
      case ACCEPTED_PREDICT:
        accept_predict();
        c->started_us = now_us();
        if (!event.success) {
          release(c);
        } else if (!parse(c)) {
          forward(c, predict);
        } else {
          enqueue(c);
        }
        break;
      case ACCEPTED_OTHER:
        accept_other();
        c->deadline = c->details.deadline;
        if (event.success) receive(c); else release(c);
        break;
      case RECEIVED: /* a request's message (NULL if the client sent none) */
        if (event.success) forward(c, c->details.method); else release(c);
        break;
      case FORWARDED: { /* the backend's answer, relayed as it came */
        grpc_byte_buffer *answer = c->reply;
        c->reply = NULL;
        reply_slice(c, answer, c->backend_status, c->backend_details, 1);
        break;
      }
      case REPLIED:
        release(c);
        break;
    }
  }
}
