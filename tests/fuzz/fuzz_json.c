/* libFuzzer harness for the JSON reader (csrc/io/json.c).
 *
 * Input: any bytes, parsed as one JSON text. Beyond "no crash, no sanitizer report, no
 * hang", an accepted text must satisfy what json.h promises, checked here independently:
 * - nesting within CX_JSON_MAX_DEPTH, every item count equal to its list's length,
 *   positions inside the text and increasing in text order;
 * - strings valid UTF-8 with no NUL inside (strlen == length), object keys unique;
 * - integers only where the text has no fraction or exponent;
 * - a value budget (max_values) never accepts a text that the unbounded parse refuses;
 * - printing the tree back as JSON and parsing that gives the same tree.
 * A broken promise is reported with __builtin_trap(), which libFuzzer records as a crash. */
#include "io/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "fuzz_json: broken promise: %s (line %d)\n", #cond, __LINE__); \
            __builtin_trap();                                              \
        }                                                                  \
    } while (0)

typedef struct {
    char *chars;
    size_t length, capacity;
} out_buffer;

static void put(out_buffer *b, const char *s, size_t n) {
    if (b->capacity - b->length < n + 1) {
        size_t capacity = b->capacity ? b->capacity : 256;
        while (capacity - b->length < n + 1)
            capacity *= 2;
        b->chars = realloc(b->chars, capacity);
        CHECK(b->chars != NULL);
        b->capacity = capacity;
    }
    memcpy(b->chars + b->length, s, n);
    b->length += n;
    b->chars[b->length] = '\0';
}

static void put_string(out_buffer *b, const char *s, size_t length) {
    put(b, "\"", 1);
    for (size_t k = 0; k < length; k++) {
        unsigned char c = (unsigned char)s[k];
        char esc[8];
        if (c == '"' || c == '\\' || c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(b, esc, 6);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    put(b, "\"", 1);
}

/* Length of the number token at text[pos]. */
static size_t number_length(const char *text, size_t length, size_t pos) {
    size_t end = pos;
    while (end < length && strchr("+-.eE0123456789", text[end]) && text[end])
        end++;
    return end - pos;
}

/* An independent reading of RFC 8259's number grammar:
 * -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static int number_grammar_ok(const char *s, size_t n) {
    size_t i = 0;
#define DIGIT(k) ((k) < n && s[k] >= '0' && s[k] <= '9')
    if (i < n && s[i] == '-')
        i++;
    if (!DIGIT(i))
        return 0;
    if (s[i++] != '0')
        while (DIGIT(i))
            i++;
    if (i < n && s[i] == '.') {
        if (!DIGIT(i + 1))
            return 0;
        for (i++; DIGIT(i); i++) {}
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (!DIGIT(i))
            return 0;
        while (DIGIT(i))
            i++;
    }
#undef DIGIT
    return i == n;
}

/* An independent reading of the string grammar on the raw token at s (its quote):
 * returns the token's length, or 0 when it breaks the grammar. Bytes >= 0x80 are left
 * to the UTF-8 check of the decoded text. */
static size_t string_token_length(const char *s, size_t avail) {
    size_t i = 1;
    while (i < avail && s[i] != '"') {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20)
            return 0;
        if (c != '\\') {
            i++;
            continue;
        }
        if (i + 1 >= avail)
            return 0;
        char e = s[i + 1];
        if (e == 'u') {
            for (int k = 0; k < 4; k++)
                if (i + 2 + k >= avail || !strchr("0123456789abcdefABCDEF", s[i + 2 + k]) || !s[i + 2 + k])
                    return 0;
            i += 6;
        } else if (e && strchr("\"\\/bfnrt", e)) {
            i += 2;
        } else {
            return 0;
        }
    }
    return i < avail ? i + 1 : 0;
}

/* Validates v (at nesting depth `depth`) and prints it to b. */
static void check_and_print(const cx_json_value *v, int depth, const char *text, size_t length,
                            out_buffer *b) {
    CHECK(v->pos < length);
    switch (v->kind) {
    case CX_JSON_NULL: put(b, "null", 4); CHECK(!memcmp(text + v->pos, "null", 4)); break;
    case CX_JSON_TRUE: put(b, "true", 4); CHECK(!memcmp(text + v->pos, "true", 4)); break;
    case CX_JSON_FALSE: put(b, "false", 5); CHECK(!memcmp(text + v->pos, "false", 5)); break;
    case CX_JSON_NUMBER: {
        size_t n = number_length(text, length, v->pos);
        CHECK(n > 0 && number_grammar_ok(text + v->pos, n));
        int has_fraction_or_exponent = memchr(text + v->pos, '.', n) || memchr(text + v->pos, 'e', n) ||
                                       memchr(text + v->pos, 'E', n);
        if (!has_fraction_or_exponent) { /* then an integer exactly when it fits in uint64 */
            const char *d = text + v->pos + (text[v->pos] == '-');
            uint64_t value = 0;
            int fits = 1;
            for (; d < text + v->pos + n; d++) {
                unsigned digit = (unsigned)(*d - '0');
                CHECK(digit < 10);
                if (value > (UINT64_MAX - digit) / 10)
                    fits = 0;
                else
                    value = value * 10 + digit;
            }
            CHECK(v->is_integer == fits);
            CHECK(!fits || v->u.magnitude == value);
        }
        if (v->is_integer) {
            CHECK(!has_fraction_or_exponent);
            char digits[32];
            int k = snprintf(digits, sizeof digits, "%s%llu", v->negative ? "-" : "",
                             (unsigned long long)v->u.magnitude);
            CHECK(k > 0 && (size_t)k == n && !memcmp(digits, text + v->pos, n));
        }
        put(b, text + v->pos, n);
        break;
    }
    case CX_JSON_STRING:
        CHECK(text[v->pos] == '"' && string_token_length(text + v->pos, length - v->pos) > 0);
        CHECK(strlen(v->u.string.chars) == v->u.string.length);
        CHECK(cx_utf8_check((const unsigned char *)v->u.string.chars, v->u.string.length) == v->u.string.length);
        put_string(b, v->u.string.chars, v->u.string.length);
        break;
    case CX_JSON_ARRAY:
    case CX_JSON_OBJECT: {
        int is_object = v->kind == CX_JSON_OBJECT;
        CHECK(depth < CX_JSON_MAX_DEPTH);
        CHECK(text[v->pos] == (is_object ? '{' : '['));
        put(b, is_object ? "{" : "[", 1);
        size_t count = 0, last_pos = v->pos;
        for (const cx_json_value *m = v->u.items.first; m; m = m->next, count++) {
            CHECK(m->pos > last_pos);
            last_pos = m->pos;
            if (count)
                put(b, ",", 1);
            if (is_object) {
                CHECK(m->key != NULL);
                CHECK(cx_utf8_check((const unsigned char *)m->key, strlen(m->key)) == strlen(m->key));
                for (const cx_json_value *o = v->u.items.first; o != m; o = o->next)
                    CHECK(strcmp(o->key, m->key) != 0);
                put_string(b, m->key, strlen(m->key));
                put(b, ":", 1);
            } else {
                CHECK(m->key == NULL);
            }
            check_and_print(m, depth + 1, text, length, b);
        }
        CHECK(count == v->u.items.count);
        put(b, is_object ? "}" : "]", 1);
        break;
    }
    default:
        CHECK(0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy, so that reading one byte past the text is an ASan report. */
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    cx_json_error error;
    cx_json_doc *doc = cx_json_parse(text, size, 0, &error);
    /* The production budget (safetensors: a value per 4 bytes + 64) and a tiny one. */
    size_t budgets[2] = {size / 4 + 64, 1 + (size ? data[0] % 8 : 0)};
    for (int k = 0; k < 2; k++) {
        cx_json_error budget_error;
        cx_json_doc *limited = cx_json_parse(text, size, budgets[k], &budget_error);
        CHECK(!limited || doc);
        cx_json_free(limited);
    }
    if (!doc) {
        CHECK(error.pos == (size_t)-1 || error.pos <= size);
        CHECK(memchr(error.message, '\0', sizeof error.message) && error.message[0]);
        free(text);
        return 0;
    }
    out_buffer printed = {0};
    check_and_print(cx_json_root(doc), 0, text, size, &printed);
    cx_json_doc *again = cx_json_parse(printed.chars, printed.length, 0, &error);
    CHECK(again != NULL);
    out_buffer reprinted = {0};
    check_and_print(cx_json_root(again), 0, printed.chars, printed.length, &reprinted);
    CHECK(reprinted.length == printed.length && !memcmp(reprinted.chars, printed.chars, printed.length));
    cx_json_free(again);
    cx_json_free(doc);
    free(printed.chars);
    free(reprinted.chars);
    free(text);
    return 0;
}
