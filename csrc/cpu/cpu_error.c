/* The CPU backend's first error (see cpu_error.h). */
#include "cpu_error.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

static pthread_mutex_t error_lock = PTHREAD_MUTEX_INITIALIZER;
static cx_status first_status = CX_OK;
static char first_message[512];
static long later_errors;

void cx_cpu_record_error(cx_status code, const char *fmt, ...) {
    pthread_mutex_lock(&error_lock);
    if (first_status == CX_OK) {
        first_status = code;
        va_list args;
        va_start(args, fmt);
        vsnprintf(first_message, sizeof first_message, fmt, args);
        va_end(args);
    } else {
        later_errors++;
    }
    pthread_mutex_unlock(&error_lock);
}

cx_status cx_cpu_take_error(void) {
    pthread_mutex_lock(&error_lock);
    cx_status status = first_status;
    long later = later_errors;
    char message[sizeof first_message];
    snprintf(message, sizeof message, "%s", first_message);
    first_status = CX_OK;
    first_message[0] = '\0';
    later_errors = 0;
    pthread_mutex_unlock(&error_lock);
    if (status == CX_OK)
        return CX_OK;
    if (later > 0)
        return cx_fail(status, "%s (and %ld later error(s) in CPU ops)", message, later);
    return cx_fail(status, "%s", message);
}
