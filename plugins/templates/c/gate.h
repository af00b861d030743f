/* {{name}}: drops sightings weaker than a signal threshold (devices outside the store) and
 * counts what it passed and dropped per window of pipeline time. Plain C with no WIT types,
 * so the unit tests (test_gate.c) build and run on this machine. */
#ifndef GATE_H
#define GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  int8_t min_dbm;
  uint64_t length_ms;
  bool open;
  uint64_t start_ms;
  uint32_t passed;
  uint32_t dropped;
} gate_t;

/* A closed window's counts. */
typedef struct {
  uint64_t start_ms;
  uint32_t passed;
  uint32_t dropped;
} gate_counts_t;

void gate_init(gate_t *g, int8_t min_dbm, uint64_t length_ms);
/* The verdict for one sighting: keep it unless the radio reported a signal below min_dbm. */
bool gate_keeps(const gate_t *g, bool has_dbm, int8_t dbm);
/* Pipeline time reached now_ms: true (with *out filled) if that closed the open window. */
bool gate_advance(gate_t *g, uint64_t now_ms, gate_counts_t *out);
/* One judged sighting at time_ms; closes the previous window first if it ended. */
bool gate_count(gate_t *g, uint64_t time_ms, bool kept, gate_counts_t *out);
/* The capture ended: the open window, if there is one. */
bool gate_stop(gate_t *g, gate_counts_t *out);
/* The JSON document for a closed window, NUL-terminated; its length, 0 if it did not fit. */
size_t gate_json(const gate_counts_t *c, char *buf, size_t size);

#endif
