/* lazyfs_shim.c: an LD_PRELOAD shim that simulates a power loss for the files of one directory,
 * in the spirit of Jepsen's LazyFS (test_powerloss).
 *
 * Only files under $PINGVAS_LAZYFS_DIR (a prefix of the path given to open) are tracked. Every
 * write to a tracked file is kept in memory, in a per-file overlay of pages, until fsync or
 * fdatasync of that file; reads (read, pread) and fstat see the overlay, so the process itself
 * sees its writes as usual. fsync/fdatasync writes the file's overlay to the real file and then
 * really syncs it. "Pulling the plug" (a write to the FIFO $PINGVAS_LAZYFS_PLUG, read by the
 * shim's own thread) stops every thread at its next file call and kills the process with
 * SIGKILL: whatever was not synced is gone, exactly what a power loss leaves on the disk.
 *
 * Files opened with O_CREAT that did not exist are created on disk at once (the directory entry
 * is not modelled: only file contents and sizes are). Memory-mapped writes are not seen (SQLite
 * maps only its -shm index, which it rebuilds after a crash), and neither are writes through
 * fds that the shim did not see open (dup, inherited fds).
 *
 * Test-only code: it is built by CMake as a shared library and never linked into pingvas. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define PAGE 4096
#define MAX_FD 4096
#define MAX_FILES 256

typedef struct page {
    off_t no; /* page number: bytes [no*PAGE, no*PAGE+PAGE) */
    unsigned char data[PAGE];
    struct page *next;
} page_t;

/* A tracked file: the bytes written since its last sync, as whole pages. */
typedef struct lfile {
    dev_t dev;
    ino_t ino;
    int used;
    off_t size;      /* logical size (what fstat reports) */
    off_t disk_size; /* size of the real file */
    page_t *pages;   /* dirty pages, unsorted */
} lfile_t;

static struct {
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*pread)(int, void *, size_t, off_t);
    ssize_t (*pwrite)(int, const void *, size_t, off_t);
    ssize_t (*writev)(int, const struct iovec *, int);
    int (*open)(const char *, int, ...);
    int (*openat)(int, const char *, int, ...);
    int (*close)(int);
    int (*fsync)(int);
    int (*fdatasync)(int);
    int (*ftruncate)(int, off_t);
    int (*fstat)(int, struct stat *);
    off_t (*lseek)(int, off_t, int);
} real;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static lfile_t files[MAX_FILES];
static int fd_file[MAX_FD]; /* index+1 into files, 0 = not tracked */
static off_t fd_pos[MAX_FD];
static int fd_append[MAX_FD];
static char dir_prefix[PATH_MAX];
static size_t dir_len;
static atomic_int plugged;

static void resolve(void)
{
    if (real.read)
        return;
    real.read = dlsym(RTLD_NEXT, "read");
    real.write = dlsym(RTLD_NEXT, "write");
    real.pread = dlsym(RTLD_NEXT, "pread64");
    real.pwrite = dlsym(RTLD_NEXT, "pwrite64");
    real.writev = dlsym(RTLD_NEXT, "writev");
    real.open = dlsym(RTLD_NEXT, "open64");
    real.openat = dlsym(RTLD_NEXT, "openat64");
    real.close = dlsym(RTLD_NEXT, "close");
    real.fsync = dlsym(RTLD_NEXT, "fsync");
    real.fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real.ftruncate = dlsym(RTLD_NEXT, "ftruncate64");
    real.fstat = dlsym(RTLD_NEXT, "fstat64");
    real.lseek = dlsym(RTLD_NEXT, "lseek64");
}

/* Every tracked call passes here first: after the plug it never returns (SIGKILL follows). */
static void gate(void)
{
    if (atomic_load(&plugged))
        for (;;)
            pause();
}

static lfile_t *tracked(int fd)
{
    return fd >= 0 && fd < MAX_FD && fd_file[fd] ? &files[fd_file[fd] - 1] : NULL;
}

static page_t *find_page(lfile_t *f, off_t no)
{
    for (page_t *p = f->pages; p; p = p->next)
        if (p->no == no)
            return p;
    return NULL;
}

/* The page no of f as the process sees it: from the overlay or else from the real file. */
static page_t *dirty_page(int fd, lfile_t *f, off_t no)
{
    page_t *p = find_page(f, no);
    if (p)
        return p;
    p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->no = no;
    if (no * PAGE < f->disk_size) {
        ssize_t n = real.pread(fd, p->data, PAGE, no * PAGE);
        (void)n; /* bytes past the real end stay zero */
    }
    p->next = f->pages;
    f->pages = p;
    return p;
}

static ssize_t overlay_write(int fd, lfile_t *f, const void *buf, size_t len, off_t off)
{
    const unsigned char *b = buf;
    size_t done = 0;
    while (done < len) {
        off_t at = off + (off_t)done;
        page_t *p = dirty_page(fd, f, at / PAGE);
        size_t in = (size_t)(at % PAGE), n = PAGE - in;
        if (n > len - done)
            n = len - done;
        memcpy(p->data + in, b + done, n);
        done += n;
    }
    if (off + (off_t)len > f->size)
        f->size = off + (off_t)len;
    return (ssize_t)len;
}

static ssize_t overlay_read(int fd, lfile_t *f, void *buf, size_t len, off_t off)
{
    if (off >= f->size)
        return 0;
    if ((off_t)len > f->size - off)
        len = (size_t)(f->size - off);
    unsigned char *b = buf;
    size_t done = 0;
    while (done < len) {
        off_t at = off + (off_t)done;
        size_t in = (size_t)(at % PAGE), n = PAGE - in;
        if (n > len - done)
            n = len - done;
        page_t *p = find_page(f, at / PAGE);
        if (p) {
            memcpy(b + done, p->data + in, n);
        } else {
            memset(b + done, 0, n);
            if (at < f->disk_size) {
                ssize_t r = real.pread(fd, b + done, n, at);
                (void)r;
            }
        }
        done += n;
    }
    return (ssize_t)len;
}

/* Writes the overlay of f to the real file (called by fsync/fdatasync). */
static int flush_file(int fd, lfile_t *f)
{
    if (real.ftruncate(fd, f->size) != 0)
        return -1;
    f->disk_size = f->size;
    while (f->pages) {
        page_t *p = f->pages;
        off_t at = p->no * PAGE;
        if (at < f->size) {
            size_t n = f->size - at < PAGE ? (size_t)(f->size - at) : PAGE;
            if (real.pwrite(fd, p->data, n, at) != (ssize_t)n)
                return -1;
        }
        f->pages = p->next;
        free(p);
    }
    return 0;
}

/* Cuts the overlay of f to len bytes (bytes past len read as zero if the file grows again). */
static void overlay_truncate(int fd, lfile_t *f, off_t len)
{
    if (len < f->size && len % PAGE && len < f->disk_size)
        dirty_page(fd, f, len / PAGE); /* the cut page must hide the real file's old tail */
    for (page_t **pp = &f->pages; *pp;) {
        page_t *p = *pp;
        if (p->no * PAGE >= len) {
            *pp = p->next;
            free(p);
            continue;
        }
        if (p->no * PAGE + PAGE > len)
            memset(p->data + (len - p->no * PAGE), 0, (size_t)(p->no * PAGE + PAGE - len));
        pp = &p->next;
    }
    f->size = len;
}

static void track(int fd, const char *path, int flags)
{
    if (fd < 0 || fd >= MAX_FD)
        return;
    size_t pl = strlen(path);
    if (pl > 4 && strcmp(path + pl - 4, "-shm") == 0)
        return; /* SQLite's shared-memory index: mapped, rebuilt after a crash */
    struct stat st;
    if (real.fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    pthread_mutex_lock(&mu);
    int slot = -1;
    for (int i = 0; i < MAX_FILES; i++) {
        if (files[i].used && files[i].dev == st.st_dev && files[i].ino == st.st_ino) {
            slot = i;
            break;
        }
        if (!files[i].used && slot < 0)
            slot = i;
    }
    if (slot >= 0) {
        lfile_t *f = &files[slot];
        if (!f->used) {
            memset(f, 0, sizeof *f);
            f->used = 1;
            f->dev = st.st_dev;
            f->ino = st.st_ino;
            f->size = f->disk_size = st.st_size;
        }
        if (flags & O_TRUNC)
            overlay_truncate(fd, f, 0);
        fd_file[fd] = slot + 1;
        fd_pos[fd] = 0;
        fd_append[fd] = (flags & O_APPEND) != 0;
    }
    pthread_mutex_unlock(&mu);
}

static int open_common(int dirfd, const char *path, int flags, mode_t mode)
{
    resolve();
    gate();
    char abs[PATH_MAX];
    if (dir_len && dirfd == AT_FDCWD && path[0] != '/' && realpath(path, abs))
        path = abs;
    int mine = dir_len && dirfd == AT_FDCWD && strncmp(path, dir_prefix, dir_len) == 0;
    int rflags = mine ? flags & ~O_TRUNC : flags; /* the overlay truncates, not the disk */
    int fd =
        dirfd == AT_FDCWD ? real.open(path, rflags, mode) : real.openat(dirfd, path, rflags, mode);
    if (fd >= 0 && mine)
        track(fd, path, flags);
    return fd;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return open_common(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return open_common(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int close(int fd)
{
    resolve();
    if (fd >= 0 && fd < MAX_FD && fd_file[fd]) {
        pthread_mutex_lock(&mu);
        fd_file[fd] = 0; /* the overlay stays: a later open of the same file sees it */
        pthread_mutex_unlock(&mu);
    }
    return real.close(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    resolve();
    gate();
    pthread_mutex_lock(&mu);
    lfile_t *f = tracked(fd);
    ssize_t n = f ? overlay_write(fd, f, buf, len, off) : -2;
    pthread_mutex_unlock(&mu);
    return n == -2 ? real.pwrite(fd, buf, len, off) : n;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) __attribute__((alias("pwrite")));

ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
    resolve();
    pthread_mutex_lock(&mu);
    lfile_t *f = tracked(fd);
    ssize_t n = f ? overlay_read(fd, f, buf, len, off) : -2;
    pthread_mutex_unlock(&mu);
    return n == -2 ? real.pread(fd, buf, len, off) : n;
}

ssize_t pread64(int fd, void *buf, size_t len, off_t off) __attribute__((alias("pread")));

ssize_t write(int fd, const void *buf, size_t len)
{
    resolve();
    gate();
    pthread_mutex_lock(&mu);
    lfile_t *f = tracked(fd);
    ssize_t n = -2;
    if (f) {
        off_t at = fd_append[fd] ? f->size : fd_pos[fd];
        n = overlay_write(fd, f, buf, len, at);
        fd_pos[fd] = at + n;
    }
    pthread_mutex_unlock(&mu);
    return n == -2 ? real.write(fd, buf, len) : n;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    resolve();
    if (!tracked(fd))
        return real.writev(fd, iov, cnt);
    ssize_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += write(fd, iov[i].iov_base, iov[i].iov_len);
    return total;
}

ssize_t read(int fd, void *buf, size_t len)
{
    resolve();
    pthread_mutex_lock(&mu);
    lfile_t *f = tracked(fd);
    ssize_t n = -2;
    if (f) {
        n = overlay_read(fd, f, buf, len, fd_pos[fd]);
        fd_pos[fd] += n;
    }
    pthread_mutex_unlock(&mu);
    return n == -2 ? real.read(fd, buf, len) : n;
}

off_t lseek(int fd, off_t off, int whence)
{
    resolve();
    pthread_mutex_lock(&mu);
    lfile_t *f = tracked(fd);
    off_t r = -2;
    if (f) {
        off_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? fd_pos[fd] : f->size;
        if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END) {
            errno = EINVAL;
            r = -1;
        } else {
            r = fd_pos[fd] = base + off;
        }
    }
    pthread_mutex_unlock(&mu);
    return r == -2 ? real.lseek(fd, off, whence) : r;
}

off_t lseek64(int fd, off_t off, int whence) __attribute__((alias("lseek")));

static int sync_common(int fd, int (*fn)(int))
{
    resolve();
    gate();
    pthread_mutex_lock(&mu);
    lfile_t *f = tracked(fd);
    int rc = f ? flush_file(fd, f) : 0;
    pthread_mutex_unlock(&mu);
    return rc != 0 ? rc : fn(fd);
}

int fsync(int fd)
{
    resolve();
    return sync_common(fd, real.fsync);
}

int fdatasync(int fd)
{
    resolve();
    return sync_common(fd, real.fdatasync);
}

int ftruncate(int fd, off_t len)
{
    resolve();
    gate();
    pthread_mutex_lock(&mu);
    lfile_t *f = tracked(fd);
    if (f)
        overlay_truncate(fd, f, len);
    pthread_mutex_unlock(&mu);
    return f ? 0 : real.ftruncate(fd, len);
}

int ftruncate64(int fd, off_t len) __attribute__((alias("ftruncate")));

int fstat(int fd, struct stat *st)
{
    resolve();
    int rc = real.fstat(fd, st);
    pthread_mutex_lock(&mu);
    lfile_t *f = tracked(fd);
    if (rc == 0 && f)
        st->st_size = f->size;
    pthread_mutex_unlock(&mu);
    return rc;
}

int fstat64(int fd, struct stat64 *st)
{
    return fstat(fd, (struct stat *)st); /* the same layout on 64-bit Linux */
}

/* The plug: waits for a byte on the FIFO, then stops every thread at its next file call (gate)
 * and kills the process. Nothing of the overlays reaches the disk. */
static void *plug_main(void *arg)
{
    const char *fifo = arg;
    int fd = real.open(fifo, O_RDONLY, 0);
    char b;
    while (fd >= 0 && real.read(fd, &b, 1) == 0) {
        real.close(fd); /* a writer opened and closed without a byte: wait again */
        fd = real.open(fifo, O_RDONLY, 0);
    }
    atomic_store(&plugged, 1);
    pthread_mutex_lock(&mu); /* no overlay write is half-done from here on */
    kill(getpid(), SIGKILL);
    return NULL;
}

__attribute__((constructor)) static void shim_init(void)
{
    resolve();
    const char *d = getenv("PINGVAS_LAZYFS_DIR");
    const char *fifo = getenv("PINGVAS_LAZYFS_PLUG");
    if (!d || !fifo || !*d || strlen(d) >= sizeof dir_prefix)
        return;
    strcpy(dir_prefix, d); /* compared with the paths given to open, made absolute */
    dir_len = strlen(dir_prefix);
    static char fifo_copy[PATH_MAX];
    strncpy(fifo_copy, fifo, sizeof fifo_copy - 1);
    pthread_t t;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the plug thread takes no signals */
    if (pthread_create(&t, NULL, plug_main, fifo_copy) == 0)
        pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}
