/* predictd's servables: TensorFlow's C API loaded privately, and the table of SavedModels that
 * standard input replaces as a whole (servables.h). */
#include "servables.h"
#include "stats.h"

#include <dlfcn.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFINE(f) __typeof__(f) *p_##f;
TF_FUNCTIONS(DEFINE)

#define MAX_SERVABLES 64
#define MAX_LABELS 64
#define MAX_LINE 8192

typedef struct {
  char *name, *label;
  long version;
} Label;

typedef struct {
  int n_servables, n_labels;
  Servable *servables[MAX_SERVABLES];
  Label labels[MAX_LABELS];
} Table;

static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static Table current;

void die(const char *what, const char *detail) {
  fprintf(stderr, "predictd: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

/* TF_CC_LIB names TensorFlow's libtensorflow_cc.so.2. It is opened RTLD_LOCAL | RTLD_DEEPBIND
 * because it exports its own copy of gRPC's internals (grpc_core::...), which would otherwise
 * interpose on the system libgrpc predictd links. */
void load_tensorflow(void) {
  const char *lib = getenv("TF_CC_LIB");
  if (!lib) die("TF_CC_LIB must name libtensorflow_cc.so.2", NULL);
  void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (!h) die("dlopen", dlerror());
#define RESOLVE(f) if (!(p_##f = dlsym(h, #f))) die("missing symbol", #f);
  TF_FUNCTIONS(RESOLVE)
}

static void release_locked(Servable *s) {
  if (--s->refs > 0) return;
  if (s->session) {
    TF_Status *status = p_TF_NewStatus();
    p_TF_CloseSession(s->session, status);
    p_TF_DeleteSession(s->session, status);
    p_TF_DeleteStatus(status);
  }
  if (s->graph) p_TF_DeleteGraph(s->graph);
  for (int k = 0; k < s->n_outputs; k++) free(s->output_keys[k]);
  free(s->input_key);
  free(s->name);
  free(s->dir);
  free(s);
}

void servable_unref(Servable *s) {
  pthread_mutex_lock(&table_mu);
  release_locked(s);
  pthread_mutex_unlock(&table_mu);
}

static Servable *find_locked(const Table *t, const char *name, long version) {
  Servable *best = NULL;
  for (int i = 0; i < t->n_servables; i++) {
    Servable *s = t->servables[i];
    if (strcmp(s->name, name) != 0) continue;
    if (version >= 0 ? s->version == version : (!best || s->version > best->version)) best = s;
  }
  return best;
}

Servable *servable_find(const Tensorflow__Serving__ModelSpec *spec) {
  if (!spec) return NULL;
  pthread_mutex_lock(&table_mu);
  long version = -1;
  int known = 1;
  switch (spec->version_choice_case) {
    case TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION:
      version = spec->version ? spec->version->value : -2;
      break;
    case TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION_LABEL:
      known = 0;
      for (int i = 0; i < current.n_labels; i++)
        if (strcmp(current.labels[i].name, spec->name) == 0 &&
            strcmp(current.labels[i].label, spec->version_label) == 0) {
          version = current.labels[i].version;
          known = 1;
        }
      break;
    default:
      break;
  }
  Servable *s = known ? find_locked(&current, spec->name, version) : NULL;
  if (s) s->refs++;
  pthread_mutex_unlock(&table_mu);
  return s;
}

/* KEY=OP:INDEX */
static int parse_tensor(const char *arg, TF_Graph *graph, char **key, TF_Output *out) {
  const char *eq = strchr(arg, '='), *colon = strrchr(arg, ':');
  if (!eq || !colon || colon < eq) return 0;
  char op[512];
  size_t len = (size_t)(colon - eq - 1);
  if (len >= sizeof op) return 0;
  memcpy(op, eq + 1, len);
  op[len] = '\0';
  out->oper = p_TF_GraphOperationByName(graph, op);
  out->index = atoi(colon + 1);
  *key = strndup(arg, (size_t)(eq - arg));
  return out->oper != NULL;
}

static size_t put_varint(unsigned char *out, uint64_t value) {
  size_t n = 0;
  do {
    out[n] = value & 0x7f;
    value >>= 7;
    if (value) out[n] |= 0x80;
    n++;
  } while (value);
  return n;
}

/* A serialized ConfigProto with the Python server's session threads, from
 * PREDICTD_SESSION_THREADS="INTRA,INTER" (its rule: both unset when neither is positive). */
static size_t session_config(unsigned char *out) {
  const char *threads = getenv("PREDICTD_SESSION_THREADS");
  int intra = 0, inter = 0;
  if (!threads || sscanf(threads, "%d,%d", &intra, &inter) != 2 || (intra <= 0 && inter <= 0))
    return 0;
  size_t n = 0;
  out[n++] = 0x10; /* field 2, intra_op_parallelism_threads */
  n += put_varint(out + n, (uint64_t)(int64_t)intra);
  out[n++] = 0x28; /* field 5, inter_op_parallelism_threads */
  n += put_varint(out + n, (uint64_t)(int64_t)inter);
  return n;
}

static Servable *backend_only(const char *name, long version) {
  Servable *s = calloc(1, sizeof(Servable));
  s->name = strdup(name);
  s->version = version;
  s->dir = strdup("-");
  s->refs = 1;
  return s;
}

/* A new servable from a "servable" line's fields (n >= 6), or NULL with ``error`` filled. */
static Servable *load(char **fields, int n, char *error, size_t error_size) {
  if (n - 5 > MAX_OUTPUTS) {
    snprintf(error, error_size, "more than %d outputs", MAX_OUTPUTS);
    return NULL;
  }
  Servable *s = backend_only(fields[1], atol(fields[2]));
  free(s->dir);
  s->dir = strdup(fields[3]);
  TF_Status *status = p_TF_NewStatus();
  TF_SessionOptions *options = p_TF_NewSessionOptions();
  unsigned char config[32];
  p_TF_SetConfig(options, config, session_config(config), status);
  s->graph = p_TF_NewGraph();
  const char *tags[] = {"serve"};
  if (p_TF_GetCode(status) == TF_OK)
    s->session = p_TF_LoadSessionFromSavedModel(options, NULL, s->dir, tags, 1, s->graph, NULL,
                                                status);
  p_TF_DeleteSessionOptions(options);
  int ok = p_TF_GetCode(status) == TF_OK;
  if (!ok) snprintf(error, error_size, "loading %s: %s", s->dir, p_TF_Message(status));
  p_TF_DeleteStatus(status);
  if (ok && !parse_tensor(fields[4], s->graph, &s->input_key, &s->input)) {
    snprintf(error, error_size, "no input tensor %s in %s", fields[4], s->dir);
    ok = 0;
  }
  for (int k = 0; ok && k < n - 5; k++, s->n_outputs++)
    if (!parse_tensor(fields[5 + k], s->graph, &s->output_keys[k], &s->outputs[k])) {
      snprintf(error, error_size, "no output tensor %s in %s", fields[5 + k], s->dir);
      ok = 0;
    }
  if (ok) return s;
  pthread_mutex_lock(&table_mu);
  release_locked(s);
  pthread_mutex_unlock(&table_mu);
  return NULL;
}

static int split(char *line, char **fields, int max) {
  int n = 0;
  char *save = NULL;
  for (char *f = strtok_r(line, "\t\n", &save); f && n < max; f = strtok_r(NULL, "\t\n", &save))
    fields[n++] = f;
  return n;
}

static void clear_staged(Table *t) {
  pthread_mutex_lock(&table_mu);
  for (int i = 0; i < t->n_servables; i++) release_locked(t->servables[i]);
  pthread_mutex_unlock(&table_mu);
  for (int i = 0; i < t->n_labels; i++) {
    free(t->labels[i].name);
    free(t->labels[i].label);
  }
  memset(t, 0, sizeof *t);
}

void *control_loop(void *unused) {
  (void)unused;
  static Table staged;
  char line[MAX_LINE], error[1024] = "";
  char *fields[MAX_OUTPUTS + 6];
  while (fgets(line, sizeof line, stdin)) {
    int n = split(line, fields, MAX_OUTPUTS + 6);
    if (n == 0) continue;
    if (strcmp(fields[0], "stats") == 0) {
      stats_drain(stdout);
    } else if (strcmp(fields[0], "listen") == 0) {
      int port = listen_now();
      if (port) printf("listening %d\n", port); else printf("error cannot bind the address\n");
      fflush(stdout);
    } else if (strcmp(fields[0], "servable") == 0 && !error[0]) {
      if (staged.n_servables == MAX_SERVABLES) {
        snprintf(error, sizeof error, "more than %d servables", MAX_SERVABLES);
        continue;
      }
      if (n != 4 && n < 6) {
        snprintf(error, sizeof error, "a servable line has NAME VERSION - or NAME VERSION DIR "
                 "INPUT OUTPUT...");
        continue;
      }
      Servable *s = NULL;
      if (n >= 6) { /* a version already loaded from the same directory keeps its session */
        pthread_mutex_lock(&table_mu);
        s = find_locked(&current, fields[1], atol(fields[2]));
        if (s && (!s->session || strcmp(s->dir, fields[3]) != 0)) s = NULL;
        if (s) s->refs++;
        pthread_mutex_unlock(&table_mu);
        if (!s) {
          char failure[1024];
          s = load(fields, n, failure, sizeof failure);
          if (!s) {
            printf("warning version %s of %s is served by the backend only: %s\n", fields[2],
                   fields[1], failure);
          }
        }
      }
      if (!s) s = backend_only(fields[1], atol(fields[2]));
      staged.servables[staged.n_servables++] = s;
    } else if (strcmp(fields[0], "label") == 0 && n == 4 && !error[0]) {
      if (staged.n_labels == MAX_LABELS) {
        snprintf(error, sizeof error, "more than %d labels", MAX_LABELS);
        continue;
      }
      Label *l = &staged.labels[staged.n_labels++];
      l->name = strdup(fields[1]);
      l->label = strdup(fields[2]);
      l->version = atol(fields[3]);
    } else if (strcmp(fields[0], "commit") == 0) {
      if (error[0]) {
        printf("error %s\n", error);
        clear_staged(&staged);
      } else {
        Table old;
        pthread_mutex_lock(&table_mu);
        old = current;
        current = staged;
        pthread_mutex_unlock(&table_mu);
        printf("ok %d %d\n", current.n_servables, current.n_labels);
        memset(&staged, 0, sizeof staged);
        clear_staged(&old);
      }
      fflush(stdout);
      error[0] = '\0';
    } else if (!error[0]) {
      snprintf(error, sizeof error, "not a table line: %s", fields[0]);
    }
  }
  exit(0); /* whoever started predictd has gone */
}
