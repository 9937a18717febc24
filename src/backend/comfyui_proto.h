/* comfyui_proto.h: ComfyUI's side of the comfyui backend as pure functions, so that they can be
 * fuzzed: the workflow's placeholders (checked, filled in) and the /ws messages (parsed). No
 * I/O, no state. The placeholders are documented in docs/backends.md. */
#ifndef PINGVAS_COMFYUI_PROTO_H
#define PINGVAS_COMFYUI_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/job.h"

#define COMFYUI_ERR_MAX 400

/* Checks an API-format workflow: a non-empty JSON object whose string values name only known
 * placeholders, {{prompt}} among them. 0, or -1 with why set (one sentence, no prefix). */
int comfyui_workflow_check(json_t *wf, char *why, size_t whylen);

/* A deep copy of wf with the job's values in its placeholders (a number where the whole string
 * is a numeric placeholder; every placeholder inside a longer string replaced by its text). New
 * reference; NULL when out of memory. negative_prompt may be NULL (""). */
json_t *comfyui_workflow_fill(json_t *wf, const job_params_t *p, const char *checkpoint);

enum comfyui_msg_kind {
    CM_OTHER = 0,   /* anything else, or not a {"type","data"} message */
    CM_STATUS,      /* the queue status (the first message on a new socket) */
    CM_START,       /* execution_start */
    CM_EXECUTING,   /* executing (node_null: the prompt ended and its history is stored) */
    CM_PROGRESS,    /* progress: value of max */
    CM_SUCCESS,     /* execution_success */
    CM_ERROR,       /* execution_error (error says where and what) */
    CM_INTERRUPTED, /* execution_interrupted */
};

typedef struct comfyui_msg {
    enum comfyui_msg_kind kind;
    int mine;          /* 1: about prompt_id; 0: about another prompt; -1: names no prompt */
    int node_null;     /* executing: "node" is null */
    int value, max;    /* progress (0 <= value, 0 < max when kind is CM_PROGRESS) */
    int64_t timestamp; /* the server's "timestamp" (ms), 0 when absent */
    char error[COMFYUI_ERR_MAX]; /* CM_ERROR: "execution_error in node N (Class): type: text" */
} comfyui_msg_t;

/* Parses one text message of the /ws socket, for prompt_id ("" when not known yet). Always
 * fills out: a malformed or unknown message is CM_OTHER. */
void comfyui_msg_parse(const char *text, size_t len, const char *prompt_id, comfyui_msg_t *out);

#endif
