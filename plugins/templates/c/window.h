/* {{name}}: sightings and randomized sightings per window of pipeline time. Plain C with no
 * WIT types, so the unit tests (test_window.c) build and run on this machine. */
#ifndef WINDOW_H
#define WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint64_t length_ms;
  bool open;
  uint64_t start_ms;
  uint32_t sightings;
  uint32_t randomized;
} window_t;

/* A closed window's counts. */
typedef struct {
  uint64_t start_ms;
  uint32_t sightings;
  uint32_t randomized;
  bool partial;
} window_counts_t;

void window_init(window_t *w, uint64_t length_ms);
/* Pipeline time reached now_ms: true (with *out filled) if that closed the open window. */
bool window_advance(window_t *w, uint64_t now_ms, window_counts_t *out);
/* One sighting at time_ms; closes the previous window first if it ended (see advance). */
bool window_add(window_t *w, uint64_t time_ms, bool randomized, window_counts_t *out);
/* The capture ended: the open window, marked partial, if there is one. */
bool window_stop(window_t *w, window_counts_t *out);
/* The JSON document for a closed window, NUL-terminated; its length, 0 if it did not fit. */
size_t window_json(const window_counts_t *c, char *buf, size_t size);

#endif
