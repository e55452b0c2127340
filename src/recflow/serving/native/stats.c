/* predictd's request counts, latency histograms and batch sizes (stats.h). */
#include "stats.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODELS 64
#define MAX_BOUNDS 32
#define MAX_CODES 17 /* gRPC status codes 0..16 */
#define MAX_ROWS 4096

typedef struct {
  char *model;
  long codes[MAX_CODES];
  long buckets[MAX_BOUNDS + 1];
  double sum_us;
} ModelStats;

static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static double bounds_us[MAX_BOUNDS];
static int n_bounds, n_models;
static ModelStats models[MAX_MODELS];
static long batches[MAX_ROWS + 1];

void stats_init(const char *bounds) {
  char *copy = strdup(bounds), *save = NULL;
  for (char *f = strtok_r(copy, ",", &save); f && n_bounds < MAX_BOUNDS; f = strtok_r(NULL, ",", &save))
    bounds_us[n_bounds++] = atof(f);
  free(copy);
}

/* The model's entry; models beyond MAX_MODELS share the last one (the table holds at most 64). */
static ModelStats *entry_locked(const char *model) {
  for (int i = 0; i < n_models; i++)
    if (strcmp(models[i].model, model) == 0) return &models[i];
  if (n_models == MAX_MODELS) return &models[MAX_MODELS - 1];
  models[n_models].model = strdup(model);
  return &models[n_models++];
}

void stats_request(const char *model, int code, double latency_us) {
  pthread_mutex_lock(&stats_mu);
  ModelStats *m = entry_locked(model);
  if (code >= 0 && code < MAX_CODES) m->codes[code]++;
  int b = 0;
  while (b < n_bounds && latency_us > bounds_us[b]) b++;
  m->buckets[b]++;
  m->sum_us += latency_us;
  pthread_mutex_unlock(&stats_mu);
}

void stats_batch(int rows) {
  pthread_mutex_lock(&stats_mu);
  batches[rows < MAX_ROWS ? rows : MAX_ROWS]++;
  pthread_mutex_unlock(&stats_mu);
}

void stats_drain(FILE *out) {
  pthread_mutex_lock(&stats_mu);
  for (int i = 0; i < n_models; i++) {
    ModelStats *m = &models[i];
    for (int code = 0; code < MAX_CODES; code++)
      if (m->codes[code]) fprintf(out, "count\t%s\t%d\t%ld\n", m->model, code, m->codes[code]);
    fprintf(out, "latency\t%s\t%.1f\t", m->model, m->sum_us);
    for (int b = 0; b <= n_bounds; b++) fprintf(out, b ? ",%ld" : "%ld", m->buckets[b]);
    fputc('\n', out);
    free(m->model);
  }
  memset(models, 0, sizeof models);
  n_models = 0;
  for (int rows = 1; rows <= MAX_ROWS; rows++)
    if (batches[rows]) fprintf(out, "batch\t%d\t%ld\n", rows, batches[rows]);
  memset(batches, 0, sizeof batches);
  pthread_mutex_unlock(&stats_mu);
  fputs("end\n", out);
  fflush(out);
}
