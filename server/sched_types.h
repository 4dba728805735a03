/* sched_types.h - the values the scheduler and its per-sequence sampler (sched_sample.c)
 * exchange: sampling settings, generation events and usage counts. A leaf header, so that
 * sched_sample needs nothing from scheduler.h while the scheduler calls sched_sample. */
#ifndef KVSERVE_SCHED_TYPES_H
#define KVSERVE_SCHED_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCH_MAX_TOP_LOGPROBS 20

typedef enum sch_event_kind {
    SCH_EV_TOKEN = 0, /* one generated token; text is what may be sent now (may be empty) */
    SCH_EV_DONE,      /* generation ended: finish reason and usage; text holds the tail */
    SCH_EV_ERROR,     /* request failed: status + message */
} sch_event_kind;

typedef enum sch_finish { SCH_FINISH_STOP = 0, SCH_FINISH_LENGTH = 1 } sch_finish;

typedef struct sch_usage {
    int32_t prompt_tokens;
    int32_t completion_tokens;
    int32_t cached_tokens;
} sch_usage;

typedef struct sch_event {
    sch_event_kind kind;
    const char *text; /* valid during the callback */
    size_t len;
    int32_t token; /* SCH_EV_TOKEN: the id; -1 otherwise */
    float logprob; /* log-probability of token (when logprobs were asked for) */
    int32_t n_top; /* alternatives below, most likely first */
    int32_t top_ids[SCH_MAX_TOP_LOGPROBS];
    float top_logprobs[SCH_MAX_TOP_LOGPROBS];
    sch_finish finish; /* SCH_EV_DONE */
    sch_usage usage;   /* SCH_EV_DONE */
    int status;        /* SCH_EV_ERROR: HTTP status (400: can never fit; 500; 503) */
    const char *message;
} sch_event;

typedef struct sch_sampling {
    float temperature;       /* <= 0: greedy */
    int32_t top_k;           /* <= 0: off */
    float top_p;             /* 1: off */
    float min_p;             /* 0: off */
    float presence_penalty;  /* 0: off */
    float frequency_penalty; /* 0: off */
    float repeat_penalty;    /* 1: off */
    int32_t repeat_last_n;   /* window of the penalties */
    uint64_t seed;
    bool has_seed;      /* else a random seed */
    int32_t n_logprobs; /* -1: none; 0: the chosen token only; k: top k alternatives */
} sch_sampling;

#endif
