/* {{name}}: the WIT glue. `wit-bindgen c` writes filter.h/.c from the contract at every
 * build; each export owns its arguments and frees them. Config: {"min_dbm": -75,
 * "window_secs": 900}, read with a deliberately tiny parser (a whole number after the key). */
#include "filter.h"
#include "gate.h"

#include <stdlib.h>
#include <string.h>

static gate_t gate;

static void publish_counts(const gate_counts_t *c) {
  char text[160];
  size_t len = gate_json(c, text, sizeof text);
  if (len == 0) return;
  filter_string_t stream, payload;
  filter_string_set(&stream, "verdicts");
  payload.ptr = (uint8_t *)text;
  payload.len = len;
  probegate_plugin_host_publish_error_t err;
  /* The host counts and logs a refusal; only the not-json text is ours to free. */
  if (!probegate_plugin_host_publish(&stream, &payload, &err))
    probegate_plugin_host_publish_error_free(&err);
}

/* The whole number after "key": in config, or fallback without the key; out of range if the
 * number is not one (the caller checks its range). */
static int64_t config_int(const filter_string_t *config, const char *key, int64_t fallback) {
  size_t n = strlen(key);
  for (size_t i = 0; i + n <= config->len; i++) {
    if (memcmp(config->ptr + i, key, n) != 0) continue;
    size_t j = i + n;
    while (j < config->len && (config->ptr[j] == ' ' || config->ptr[j] == ':')) j++;
    int64_t sign = 1;
    if (j < config->len && config->ptr[j] == '-') {
      sign = -1;
      j++;
    }
    if (j >= config->len || config->ptr[j] < '0' || config->ptr[j] > '9') return INT64_MIN;
    int64_t v = 0;
    while (j < config->len && config->ptr[j] >= '0' && config->ptr[j] <= '9' && v < 1000000)
      v = v * 10 + (config->ptr[j++] - '0');
    return sign * v;
  }
  return fallback;
}

bool exports_filter_init(filter_string_t *config, filter_string_t *err) {
  int64_t secs = config_int(config, "\"window_secs\"", 900);
  int64_t dbm = config_int(config, "\"min_dbm\"", -75);
  filter_string_free(config);
  /* The host frees the error text after the call: it must be malloc'd. */
  if (secs < 1 || secs > 86400) {
    filter_string_dup(err, "window_secs must be a whole number from 1 to 86400");
    return false;
  }
  if (dbm < -128 || dbm > 0) {
    filter_string_dup(err, "min_dbm must be a whole number from -128 to 0");
    return false;
  }
  gate_init(&gate, (int8_t)dbm, (uint64_t)secs * 1000);
  return true;
}

void exports_filter_filter(filter_list_sighting_t *batch, filter_list_verdict_t *ret) {
  /* The bindings free the verdict list after the host has read it: it must be malloc'd. */
  ret->len = 0;
  ret->ptr = batch->len ? malloc(batch->len * sizeof *ret->ptr) : NULL;
  if (batch->len && !ret->ptr) abort(); /* a trap: the host backs off and drops, never leaks */
  gate_counts_t closed;
  for (size_t i = 0; i < batch->len; i++) {
    const filter_sighting_t *s = &batch->ptr[i];
    bool kept = gate_keeps(&gate, s->signal_dbm.is_some, s->signal_dbm.val);
    if (gate_count(&gate, s->time_ms, kept, &closed)) publish_counts(&closed);
    ret->ptr[i].tag = kept ? PROBEGATE_PLUGIN_TYPES_VERDICT_PASS : PROBEGATE_PLUGIN_TYPES_VERDICT_DROP;
    ret->len = i + 1;
  }
  filter_list_sighting_free(batch);
}

void exports_filter_on_tick(uint64_t now_ms) {
  gate_counts_t closed;
  if (gate_advance(&gate, now_ms, &closed)) publish_counts(&closed);
}

void exports_filter_on_message(filter_string_t *topic, filter_string_t *payload) {
  filter_string_free(topic);
  filter_string_free(payload);
}

void exports_filter_on_stop(uint64_t now_ms) {
  gate_counts_t closed;
  if (gate_advance(&gate, now_ms, &closed)) publish_counts(&closed);
  if (gate_stop(&gate, &closed)) publish_counts(&closed);
}
