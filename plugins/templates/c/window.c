#include "window.h"
#include "json_out.h"

#include <string.h>

void window_init(window_t *w, uint64_t length_ms) {
  memset(w, 0, sizeof *w);
  w->length_ms = length_ms;
}

static void take(window_t *w, bool partial, window_counts_t *out) {
  out->start_ms = w->start_ms;
  out->sightings = w->sightings;
  out->randomized = w->randomized;
  out->partial = partial;
  w->open = false;
  w->sightings = w->randomized = 0;
}

bool window_advance(window_t *w, uint64_t now_ms, window_counts_t *out) {
  if (!w->open || now_ms < w->start_ms + w->length_ms) return false;
  take(w, false, out);
  return true;
}

bool window_add(window_t *w, uint64_t time_ms, bool randomized, window_counts_t *out) {
  bool closed = window_advance(w, time_ms, out);
  if (!w->open) {
    w->open = true;
    w->start_ms = time_ms - time_ms % w->length_ms;
  }
  if (w->sightings < UINT32_MAX) w->sightings++;
  if (randomized && w->randomized < UINT32_MAX) w->randomized++;
  return closed;
}

bool window_stop(window_t *w, window_counts_t *out) {
  if (!w->open) return false;
  take(w, true, out);
  return true;
}

size_t window_json(const window_counts_t *c, char *buf, size_t size) {
  size_t at = json_put(buf, 0, size, "{\"start_ms\":");
  at = json_put_u64(buf, at, size, c->start_ms);
  at = json_put(buf, at, size, ",\"sightings\":");
  at = json_put_u64(buf, at, size, c->sightings);
  at = json_put(buf, at, size, ",\"randomized\":");
  at = json_put_u64(buf, at, size, c->randomized);
  at = json_put(buf, at, size, c->partial ? ",\"partial\":true}" : ",\"partial\":false}");
  if (at >= size) return 0;
  buf[at] = '\0';
  return at;
}
