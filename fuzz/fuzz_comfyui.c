/* fuzz_comfyui.c: libFuzzer target for what a ComfyUI server (or a workflow file) feeds the
 * comfyui backend (src/backend/comfyui_proto.c): the first input byte picks the parser, the
 * rest is its input. Built by scripts/fuzz.sh (see fuzz/README.md).
 *
 *   0 (even): one /ws text message, parsed for a fixed prompt id;
 *   1 (odd):  a workflow file: parsed as JSON, checked, and when accepted filled in.
 *
 * Invariants: no crash, no leak; a message's kind is one of comfyui_msg_kind, progress has
 * 0 <= value <= max and max > 0, an error text is NUL-terminated within its buffer; an accepted
 * workflow fills into a JSON object of the same size whose string values hold no placeholder
 * (the job's values are free of them here); a refused one says why. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/comfyui_proto.h"

static const char *const known[] = {
    "{{prompt}}", "{{negative_prompt}}", "{{checkpoint}}", "{{model}}", "{{width}}",
    "{{height}}", "{{steps}}",           "{{seed}}",       "{{cfg}}"};

static void check_message(const char *text, size_t len)
{
    comfyui_msg_t m;
    comfyui_msg_parse(text, len, "0f6d1c9e-prompt", &m);
    if ((int)m.kind < CM_OTHER || m.kind > CM_INTERRUPTED || m.mine < -1 || m.mine > 1)
        abort();
    if (m.kind == CM_PROGRESS && (m.max <= 0 || m.value < 0 || m.value > m.max))
        abort();
    if (strnlen(m.error, sizeof m.error) >= sizeof m.error)
        abort();
}

/* 1 when a string value of v (not a key) still holds a known placeholder. */
static int placeholder_left(json_t *v)
{
    const char *key;
    json_t *child;
    size_t i;
    if (json_is_string(v)) {
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            if (strstr(json_string_value(v), known[k]))
                return 1;
    } else if (json_is_object(v)) {
        json_object_foreach(v, key, child) if (placeholder_left(child)) return 1;
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, child) if (placeholder_left(child)) return 1;
    }
    return 0;
}

static void check_workflow(const char *text, size_t len)
{
    json_t *wf = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    char why[200] = "";
    if (wf && comfyui_workflow_check(wf, why, sizeof why) == 0) {
        job_params_t p = {.prompt = "a fox",
                          .negative_prompt = "blurry",
                          .model = "sd15",
                          .width = 512,
                          .height = 512,
                          .steps = 20,
                          .cfg_scale = 7.5,
                          .seed = 4294967295};
        json_t *f = comfyui_workflow_fill(wf, &p, "v1-5.safetensors");
        if (!f || !json_is_object(f) || json_object_size(f) != json_object_size(wf) ||
            placeholder_left(f))
            abort();
        json_decref(f);
    } else if (wf && !why[0]) {
        abort();
    }
    json_decref(wf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *body = (const char *)data + 1;
    if (data[0] % 2 == 0)
        check_message(body, size - 1);
    else
        check_workflow(body, size - 1);
    return 0;
}
