/*
 * visit-tally: sightings and distinct devices per interval (a minute by default), written in
 * plain C against the WIT contract alone, to show that a plugin needs no Rust and no SDK.
 *
 * Stream `tally`, one message per interval in which anything was seen, when it closes:
 *   {"start_ms":1697803200000,"end_ms":1697803260000,"devices":27,"randomized":13,
 *    "sightings":41,"partial":false}
 * Intervals are aligned to multiples of `interval_secs` since the Unix epoch. An interval with
 * no sighting publishes nothing. `partial` marks the open interval that `on-stop` publishes.
 *
 * Stream `control`: the answer to a back-office command, e.g. {"command":"reset","now_secs":N}.
 * Command `reset` discards what the open interval has counted so far.
 */
#include "analytics.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_INTERVAL_SECS 60
#define MAX_INTERVAL_SECS 86400
#define FIRST_CAPACITY 64

static uint64_t interval_ms = DEFAULT_INTERVAL_SECS * 1000;

/* The open interval; `is_open` is false until a sighting opens one. */
static bool is_open;
static uint64_t start_ms;
static uint32_t sightings;
static uint32_t devices;
static uint32_t randomized;

/*
 * The pseudonyms seen in the open interval: open addressing with linear probing. 0 marks an
 * empty slot, so pseudonym 0 (as likely as any other) is tracked by a flag of its own.
 */
static uint64_t *slots;
static uint32_t capacity; /* a power of two */
static bool seen_zero;

static void log_line(probegate_plugin_host_log_level_t level, const char *text) {
  analytics_string_t message;
  analytics_string_set(&message, text);
  probegate_plugin_host_log(level, &message);
}

static uint32_t slot_of(uint64_t device) {
  /* Pseudonyms are keyed hashes already; the multiply only guards against a host that
   * someday hands out sequential ids. */
  return (uint32_t)((device * 0x9E3779B97F4A7C15ull) >> 32) & (capacity - 1);
}

/* Inserts without growing; true if the device is new. */
static bool insert(uint64_t device) {
  uint32_t i = slot_of(device);
  while (slots[i] != 0) {
    if (slots[i] == device) return false;
    i = (i + 1) & (capacity - 1);
  }
  slots[i] = device;
  return true;
}

static void grow(void) {
  uint32_t old_capacity = capacity;
  uint64_t *old = slots;
  capacity = old_capacity ? old_capacity * 2 : FIRST_CAPACITY;
  slots = calloc(capacity, sizeof *slots);
  /* Out of linear memory: trapping lets the host restart us empty, which beats counting
   * wrong without saying so. */
  if (!slots) abort();
  for (uint32_t i = 0; i < old_capacity; i++)
    if (old[i] != 0) insert(old[i]);
  free(old);
}

static bool remember(uint64_t device) {
  if (device == 0) {
    bool fresh = !seen_zero;
    seen_zero = true;
    return fresh;
  }
  /* Keep the table at most 3/4 full so probe sequences stay short. */
  if ((uint64_t)(devices + 1) * 4 > (uint64_t)capacity * 3) grow();
  return insert(device);
}

static void forget_all(void) {
  if (slots) memset(slots, 0, capacity * sizeof *slots);
  seen_zero = false;
  is_open = false;
  sightings = devices = randomized = 0;
}

/* A tiny JSON writer: fixed buffer, numbers and literals only, never printf (which would
 * pull WASI imports into the component, and the host links no WASI). */
typedef struct {
  char text[256];
  size_t len;
} json_t;

static void put(json_t *j, const char *s) {
  size_t n = strlen(s);
  if (j->len + n < sizeof j->text) {
    memcpy(j->text + j->len, s, n);
    j->len += n;
  }
}

static void put_u64(json_t *j, uint64_t v) {
  char digits[21];
  size_t n = sizeof digits - 1;
  digits[n] = '\0';
  do {
    digits[--n] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  put(j, digits + n);
}

static void publish(const char *stream, const json_t *j) {
  analytics_string_t name, payload;
  analytics_string_set(&name, stream);
  payload.ptr = (uint8_t *)j->text;
  payload.len = j->len;
  probegate_plugin_host_publish_error_t err;
  /* The host logs and counts a refused message itself; the only duty left is to free the
   * text of a not-json error, which the bindings hand over to us. */
  if (!probegate_plugin_host_publish(&name, &payload, &err))
    probegate_plugin_host_publish_error_free(&err);
}

static void publish_open(bool partial) {
  json_t j = {.len = 0};
  put(&j, "{\"start_ms\":");
  put_u64(&j, start_ms);
  put(&j, ",\"end_ms\":");
  put_u64(&j, start_ms + interval_ms);
  put(&j, ",\"devices\":");
  put_u64(&j, devices);
  put(&j, ",\"randomized\":");
  put_u64(&j, randomized);
  put(&j, ",\"sightings\":");
  put_u64(&j, sightings);
  put(&j, partial ? ",\"partial\":true}" : ",\"partial\":false}");
  publish("tally", &j);
}

/* Closes the open interval if it ended at or before `now_ms`. One at most: the intervals
 * after it are empty until a sighting opens a new one, and empty ones are not published. */
static void advance_to(uint64_t now_ms) {
  if (is_open && now_ms >= start_ms + interval_ms) {
    publish_open(false);
    forget_all();
  }
}

/* --- Config: {"interval_secs": N}, by hand, since there is no JSON library here. --- */

typedef struct {
  const uint8_t *at, *end;
} cursor_t;

static void skip_space(cursor_t *c) {
  while (c->at < c->end && (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r'))
    c->at++;
}

static bool eat(cursor_t *c, char ch) {
  skip_space(c);
  if (c->at < c->end && *c->at == (uint8_t)ch) {
    c->at++;
    return true;
  }
  return false;
}

/* A string's raw bytes between the quotes (escapes left as they are). */
static bool read_string(cursor_t *c, const uint8_t **text, size_t *len) {
  if (!eat(c, '"')) return false;
  *text = c->at;
  while (c->at < c->end && *c->at != '"') c->at += (*c->at == '\\') ? 2 : 1;
  if (c->at >= c->end) return false;
  *len = (size_t)(c->at - *text);
  c->at++;
  return true;
}

static bool read_u64(cursor_t *c, uint64_t *out) {
  skip_space(c);
  const uint8_t *first = c->at;
  uint64_t v = 0;
  while (c->at < c->end && *c->at >= '0' && *c->at <= '9') {
    if (v > (UINT64_MAX - 9) / 10) return false;
    v = v * 10 + (uint64_t)(*c->at++ - '0');
  }
  *out = v;
  /* Refuse 60.5 or 6e1: a count of seconds is a whole number. */
  return c->at > first && (c->at == c->end || (*c->at != '.' && *c->at != 'e' && *c->at != 'E'));
}

/* Sets `*why` and returns false if the config is not one the plugin understands. */
static bool parse_config(const uint8_t *text, size_t len, const char **why) {
  cursor_t c = {text, text + len};
  *why = "config must be a JSON object";
  if (!eat(&c, '{')) return false;
  if (eat(&c, '}')) {
    skip_space(&c);
    return c.at == c.end;
  }
  do {
    const uint8_t *key;
    size_t key_len;
    if (!read_string(&c, &key, &key_len) || !eat(&c, ':')) return false;
    /* An unknown key is most likely a typo: refusing it tells the operator at check-config
     * instead of running with a default they did not mean. */
    *why = "unknown config key (the only one is interval_secs)";
    if (key_len != 13 || memcmp(key, "interval_secs", 13) != 0) return false;
    uint64_t secs;
    *why = "interval_secs must be a whole number of seconds from 1 to 86400";
    if (!read_u64(&c, &secs) || secs == 0 || secs > MAX_INTERVAL_SECS) return false;
    interval_ms = secs * 1000;
  } while (eat(&c, ','));
  *why = "config must be a JSON object";
  if (!eat(&c, '}')) return false;
  skip_space(&c);
  return c.at == c.end;
}

/* --- The exports. Each owns its arguments and frees them (the bindings' convention). --- */

bool exports_analytics_init(analytics_string_t *config, analytics_string_t *err) {
  const char *why;
  interval_ms = DEFAULT_INTERVAL_SECS * 1000;
  bool ok = parse_config(config->ptr, config->len, &why);
  analytics_string_free(config);
  if (!ok) {
    /* The host frees this after the call returns (cabi_post_init), so it must be malloc'd. */
    analytics_string_dup(err, why);
    return false;
  }
  forget_all();
  return true;
}

void exports_analytics_on_sightings(analytics_list_sighting_t *batch) {
  for (size_t i = 0; i < batch->len; i++) {
    const analytics_sighting_t *s = &batch->ptr[i];
    advance_to(s->time_ms);
    if (!is_open) {
      is_open = true;
      start_ms = s->time_ms - s->time_ms % interval_ms;
    }
    if (sightings < UINT32_MAX) sightings++;
    if (remember(s->device)) {
      devices++;
      if (s->randomized) randomized++;
    }
  }
  analytics_list_sighting_free(batch);
}

void exports_analytics_on_tick(uint64_t now_ms) { advance_to(now_ms); }

void exports_analytics_on_message(analytics_string_t *topic, analytics_string_t *payload) {
  if (topic->len == 5 && memcmp(topic->ptr, "reset", 5) == 0) {
    forget_all();
    json_t j = {.len = 0};
    put(&j, "{\"command\":\"reset\",\"now_secs\":");
    put_u64(&j, probegate_plugin_host_now_secs());
    put(&j, "}");
    publish("control", &j);
  } else {
    log_line(PROBEGATE_PLUGIN_TYPES_LOG_LEVEL_WARN, "unknown command ignored (known: reset)");
  }
  analytics_string_free(topic);
  analytics_string_free(payload);
}

void exports_analytics_on_stop(uint64_t now_ms) {
  advance_to(now_ms);
  if (is_open) publish_open(true);
  forget_all();
}
