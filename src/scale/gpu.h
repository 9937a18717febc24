/* gpu.h: GPU discovery through NVML, loaded with dlopen at run time (no build dependency). */
#ifndef PINGVAS_GPU_H
#define PINGVAS_GPU_H

/* Fills out with the indexes of the GPUs NVML sees (at most max). Returns the count; 0 when
 * NVML is absent or sees none. */
int gpu_discover(int *out, int max);
/* Parses "0,1,3" into out (at most max). Returns the count, or -1 on a malformed list. */
int gpu_parse_list(const char *s, int *out, int max);

#endif
