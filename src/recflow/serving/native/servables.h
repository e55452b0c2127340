/* The SavedModels predictd serves itself, and the table that names them (see servables.c). */
#ifndef PREDICTD_SERVABLES_H
#define PREDICTD_SERVABLES_H

#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"
#include "tensorflow_serving/apis/model.pb-c.h"

#define MAX_OUTPUTS 16

#define TF_FUNCTIONS(X)                                                                      \
  X(TF_NewStatus) X(TF_DeleteStatus) X(TF_NewSessionOptions) X(TF_DeleteSessionOptions)      \
  X(TF_SetConfig) X(TF_GetCode) X(TF_Message) X(TF_NewGraph) X(TF_DeleteGraph)              \
  X(TF_LoadSessionFromSavedModel) X(TF_CloseSession) X(TF_DeleteSession)                    \
  X(TF_GraphOperationByName) X(TF_AllocateTensor) X(TF_TensorData) X(TF_TensorType)         \
  X(TF_NumDims) X(TF_Dim) X(TF_TensorByteSize) X(TF_SessionRun) X(TF_DeleteTensor)
#define DECLARE_EXTERN(f) extern __typeof__(f) *p_##f;
TF_FUNCTIONS(DECLARE_EXTERN)

typedef struct Servable {
  char *name;
  long version;
  char *dir;
  TF_Graph *graph;
  TF_Session *session;
  char *input_key;
  TF_Output input;
  int n_outputs;
  char *output_keys[MAX_OUTPUTS];
  TF_Output outputs[MAX_OUTPUTS];
  int refs; /* the table's reference and one per call holding it; guarded by the table lock */
} Servable;

void load_tensorflow(void);
void die(const char *what, const char *detail);

/* The servable ``spec`` names (latest version when it names none), with a reference the caller
 * gives back with servable_unref; NULL when the current table has none. */
Servable *servable_find(const Tensorflow__Serving__ModelSpec *spec);
void servable_unref(Servable *s);

/* Reads table updates from standard input until it closes, then exits the process:
 *   servable<TAB>NAME<TAB>VERSION<TAB>DIR<TAB>INPUT_KEY=OP:INDEX<TAB>OUTPUT_KEY=OP:INDEX...
 *   servable<TAB>NAME<TAB>VERSION<TAB>-      (a version served by the backend only)
 *   label<TAB>NAME<TAB>LABEL<TAB>VERSION
 *   commit
 *   stats                                     (answered as stats.h says)
 *   listen                                    (bind ADDRESS: "listening PORT" or "error ...")
 * ``commit`` makes the lines since the previous commit the whole table (loading versions not
 * loaded yet, keeping the sessions of those that are) and answers "ok SERVABLES LABELS" on
 * standard output once requests see it, or "error MESSAGE" with the previous table kept. A
 * version that fails to load stays in the table as backend-only, with a "warning MESSAGE" line
 * before the answer: requests for it, or for the latest version when it is the latest, are then
 * forwarded, never answered by an older version. A servable whose ``session`` is NULL is such a
 * backend-only version. */
void *control_loop(void *unused);

/* Binds the server's address and starts it; the bound port, 0 if it cannot bind. */
int listen_now(void);

#endif
