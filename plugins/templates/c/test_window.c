/* Unit tests for window.c, built and run natively by `./build.sh test`. */
#include "window.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  window_t w;
  window_counts_t c;
  char json[160];
  window_init(&w, 60000);
  assert(!window_add(&w, 61000, false, &c));
  assert(!window_add(&w, 62000, true, &c));
  assert(!window_advance(&w, 119999, &c));
  assert(window_advance(&w, 120000, &c));
  assert(c.start_ms == 60000 && c.sightings == 2 && c.randomized == 1 && !c.partial);
  assert(window_json(&c, json, sizeof json) > 0);
  assert(strcmp(json, "{\"start_ms\":60000,\"sightings\":2,\"randomized\":1,\"partial\":false}") == 0);
  /* A sighting after a gap closes the old window before it opens its own. */
  assert(!window_add(&w, 130000, false, &c));
  assert(window_add(&w, 250000, false, &c) && c.start_ms == 120000 && c.sightings == 1);
  assert(window_stop(&w, &c) && c.partial && c.start_ms == 240000);
  assert(!window_stop(&w, &c));
  assert(window_json(&c, json, 10) == 0);
  puts("window: all tests passed");
  return 0;
}
