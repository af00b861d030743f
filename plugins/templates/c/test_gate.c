/* Unit tests for gate.c, built and run natively by `./build.sh test`. */
#include "gate.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  gate_t g;
  gate_counts_t c;
  char json[160];
  gate_init(&g, -70, 60000);
  assert(gate_keeps(&g, true, -70) && gate_keeps(&g, true, -40));
  assert(!gate_keeps(&g, true, -71));
  /* No reading: the radio did not say, so the device is not judged to be outside. */
  assert(gate_keeps(&g, false, -128));
  assert(!gate_count(&g, 61000, true, &c));
  assert(!gate_count(&g, 62000, false, &c));
  assert(!gate_count(&g, 63000, false, &c));
  assert(!gate_advance(&g, 119999, &c));
  assert(gate_advance(&g, 120000, &c));
  assert(c.start_ms == 60000 && c.passed == 1 && c.dropped == 2);
  assert(gate_json(&c, json, sizeof json) > 0);
  assert(strcmp(json, "{\"start_ms\":60000,\"passed\":1,\"dropped\":2}") == 0);
  /* A sighting after a gap closes the old window before it opens its own. */
  assert(!gate_count(&g, 130000, true, &c));
  assert(gate_count(&g, 250000, true, &c) && c.start_ms == 120000 && c.passed == 1);
  assert(gate_stop(&g, &c) && c.start_ms == 240000 && c.passed == 1 && c.dropped == 0);
  assert(!gate_stop(&g, &c));
  assert(gate_json(&c, json, 10) == 0);
  puts("gate: all tests passed");
  return 0;
}
