#include "gate.h"
#include "json_out.h"

#include <string.h>

void gate_init(gate_t *g, int8_t min_dbm, uint64_t length_ms) {
  memset(g, 0, sizeof *g);
  g->min_dbm = min_dbm;
  g->length_ms = length_ms;
}

bool gate_keeps(const gate_t *g, bool has_dbm, int8_t dbm) {
  return !has_dbm || dbm >= g->min_dbm;
}

static void take(gate_t *g, gate_counts_t *out) {
  out->start_ms = g->start_ms;
  out->passed = g->passed;
  out->dropped = g->dropped;
  g->open = false;
  g->passed = g->dropped = 0;
}

bool gate_advance(gate_t *g, uint64_t now_ms, gate_counts_t *out) {
  if (!g->open || now_ms < g->start_ms + g->length_ms) return false;
  take(g, out);
  return true;
}

bool gate_count(gate_t *g, uint64_t time_ms, bool kept, gate_counts_t *out) {
  bool closed = gate_advance(g, time_ms, out);
  if (!g->open) {
    g->open = true;
    g->start_ms = time_ms - time_ms % g->length_ms;
  }
  uint32_t *n = kept ? &g->passed : &g->dropped;
  if (*n < UINT32_MAX) (*n)++;
  return closed;
}

bool gate_stop(gate_t *g, gate_counts_t *out) {
  if (!g->open) return false;
  take(g, out);
  return true;
}

size_t gate_json(const gate_counts_t *c, char *buf, size_t size) {
  size_t at = json_put(buf, 0, size, "{\"start_ms\":");
  at = json_put_u64(buf, at, size, c->start_ms);
  at = json_put(buf, at, size, ",\"passed\":");
  at = json_put_u64(buf, at, size, c->passed);
  at = json_put(buf, at, size, ",\"dropped\":");
  at = json_put_u64(buf, at, size, c->dropped);
  at = json_put(buf, at, size, "}");
  if (at >= size) return 0;
  buf[at] = '\0';
  return at;
}
