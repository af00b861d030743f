/* {{name}}: the WIT glue. `wit-bindgen c` writes analytics.h/.c from the contract at every
 * build; each export owns its arguments and frees them. Config: {"window_secs": N}; this
 * template reads it with a deliberately tiny parser (a whole number after "window_secs"). */
#include "analytics.h"
#include "window.h"

#include <stdlib.h>
#include <string.h>

static window_t window;

static void publish_counts(const window_counts_t *c) {
  char text[160];
  size_t len = window_json(c, text, sizeof text);
  if (len == 0) return;
  analytics_string_t stream, payload;
  analytics_string_set(&stream, "counts");
  payload.ptr = (uint8_t *)text;
  payload.len = len;
  probegate_plugin_host_publish_error_t err;
  /* The host counts and logs a refusal; only the not-json text is ours to free. */
  if (!probegate_plugin_host_publish(&stream, &payload, &err))
    probegate_plugin_host_publish_error_free(&err);
}

static uint64_t window_secs(const analytics_string_t *config) {
  const char *key = "\"window_secs\"";
  size_t n = strlen(key);
  for (size_t i = 0; i + n <= config->len; i++) {
    if (memcmp(config->ptr + i, key, n) != 0) continue;
    size_t j = i + n;
    while (j < config->len && (config->ptr[j] == ' ' || config->ptr[j] == ':')) j++;
    uint64_t v = 0;
    while (j < config->len && config->ptr[j] >= '0' && config->ptr[j] <= '9' && v < 86400)
      v = v * 10 + (uint64_t)(config->ptr[j++] - '0');
    return v;
  }
  return 900;
}

bool exports_analytics_init(analytics_string_t *config, analytics_string_t *err) {
  uint64_t secs = window_secs(config);
  analytics_string_free(config);
  if (secs == 0 || secs > 86400) {
    /* The host frees the error text after the call: it must be malloc'd. */
    analytics_string_dup(err, "window_secs must be a whole number from 1 to 86400");
    return false;
  }
  window_init(&window, secs * 1000);
  return true;
}

void exports_analytics_on_sightings(analytics_list_sighting_t *batch) {
  window_counts_t closed;
  for (size_t i = 0; i < batch->len; i++) {
    const analytics_sighting_t *s = &batch->ptr[i];
    if (window_add(&window, s->time_ms, s->randomized, &closed)) publish_counts(&closed);
  }
  analytics_list_sighting_free(batch);
}

void exports_analytics_on_tick(uint64_t now_ms) {
  window_counts_t closed;
  if (window_advance(&window, now_ms, &closed)) publish_counts(&closed);
}

void exports_analytics_on_message(analytics_string_t *topic, analytics_string_t *payload) {
  analytics_string_free(topic);
  analytics_string_free(payload);
}

void exports_analytics_on_stop(uint64_t now_ms) {
  window_counts_t closed;
  if (window_advance(&window, now_ms, &closed)) publish_counts(&closed);
  if (window_stop(&window, &closed)) publish_counts(&closed);
}
