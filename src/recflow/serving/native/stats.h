/* What predictd serves itself, counted for the Python server's Prometheus endpoint, which
 * drains it (the "stats" command of servables.h) and adds it to its own series. */
#ifndef PREDICTD_STATS_H
#define PREDICTD_STATS_H

#include <stdio.h>

/* ``bounds``: the latency histogram's upper bounds in microseconds, comma-separated. */
void stats_init(const char *bounds);
void stats_request(const char *model, int code, double latency_us);
void stats_batch(int rows);
/* Writes everything counted since the last drain and starts again from zero:
 *   count<TAB>MODEL<TAB>CODE<TAB>N
 *   latency<TAB>MODEL<TAB>SUM_US<TAB>C0,C1,...  (one count per bound, then one above the last)
 *   batch<TAB>ROWS<TAB>BATCHES
 *   end */
void stats_drain(FILE *out);

#endif
