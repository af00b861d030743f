/* Writing a JSON payload into a fixed buffer without printf, which would import WASI (the
 * probegate host does not link it). Header-only, so build.sh needs no extra file.
 *
 * Each call appends at `at` and returns the new end, or `size` once the text no longer fits:
 * check `at >= size` once at the end instead of after every call. */
#ifndef JSON_OUT_H
#define JSON_OUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline size_t json_put(char *buf, size_t at, size_t size, const char *s) {
  size_t n = strlen(s);
  if (at + n >= size) return size;
  memcpy(buf + at, s, n);
  return at + n;
}

static inline size_t json_put_u64(char *buf, size_t at, size_t size, uint64_t v) {
  char digits[21];
  size_t n = sizeof digits - 1;
  digits[n] = '\0';
  do {
    digits[--n] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return json_put(buf, at, size, digits + n);
}

#endif
