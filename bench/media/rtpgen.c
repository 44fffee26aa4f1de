/*
 * rtpgen.c - RTP load generator and sink for the media benchmark
 * (bench/media, issue #4).
 *
 *   rtpgen --plan FILE [--warmup S] [--duration S] [--drain-ms MS] [--pps N]
 *          [--tick-us US] [--cpu-pid PID]... [--batch N] [--out FILE]
 *
 * The plan has one line per stream (one direction of RTP; a call is two):
 *
 *   BIND_PORT DEST_IP DEST_PORT PEER
 *
 * Stream i (its line number, from 0) owns a UDP socket bound on
 * 127.0.0.1:BIND_PORT, sends its packets to DEST_IP:DEST_PORT, and expects
 * them to come out of the relay at the socket of stream PEER (the other side
 * of the call). Lines starting with '#' are comments.
 *
 * Sending. Each stream sends 172-byte RTP packets: 12-byte header (V=2,
 * PT 0 = PCMU, SSRC 0x5B000000 + i, seq from a per-stream start, timestamp
 * += 160 per packet) and 160 bytes of µ-law silence (0xFF) of which the
 * first 16 carry, in host byte order:
 *   bytes 0..7   send time, CLOCK_MONOTONIC ns, read just before the send
 *   bytes 8..11  stream number i
 *   bytes 12..15 packet number n (0, 1, 2, ...)
 * so loss, order and latency are counted right even through a relay that
 * rewrites SSRC or sequence numbers (such rewrites are counted too).
 * A timerfd ticks every --tick-us (1000); the packet interval 1/--pps
 * (20 ms at 50 pps) holds 20 ticks, and stream i sends in tick slot
 * i mod 20, so the streams are spread evenly over each 20 ms. A late tick
 * (the generator fell behind) sends the slots it missed, and is counted;
 * after a stall longer than --max-catchup-ms (20) the older slots are
 * skipped: those packets are never sent (counted as "skipped", not lost).
 *
 * Receiving. Every socket is in one epoll set with the timer; a ready socket
 * is read with recvmmsg (--batch, 32), the receive time (CLOCK_MONOTONIC) is
 * read once per recvmmsg. Per stream it counts, from the packet number:
 * received, duplicates, reordered (a number below the highest seen),
 * misrouted (arrived at a socket other than PEER's); latency = receive
 * time - embedded send time goes into a histogram (1 µs buckets below
 * 100 ms, 100 µs buckets up to 10 s, an overflow count and the maximum).
 *
 * Window. The run is warm-up (--warmup, 5 s) + measured window (--duration,
 * 20 s) + drain (--drain-ms, 500: only receiving). Only packets *scheduled*
 * inside the window count (sent, received, lost, latency), so the counts are
 * exact. At the first tick of the window and the first tick after it,
 * before sending, it reads the CPU counters: utime+stime (clock ticks) and
 * /proc/.../schedstat run and run-queue wait time (ns) of every thread of
 * each --cpu-pid process, its own CPU time (getrusage) and the busy ticks
 * of every CPU from /proc/stat. So the target's CPU is measured over exactly
 * the window in which the measured packets were sent.
 *
 * Drops. Before the first tick and after the drain it sums the `drops`
 * column of /proc/net/udp for its own sockets and for the sockets the
 * --cpu-pid processes hold (found by inode in /proc/PID/fd): a receive
 * queue that overflowed (whole run, warm-up included).
 *
 * Output: one JSON object (stdout or --out) at the end; progress and errors
 * on stderr. Exit 0 after a complete run, 1 if a --cpu-pid process vanished
 * during the run, 2 on a bad argument, plan or socket (port in use).
 * Pin it with taskset; it is single-threaded.
 *
 * Build: cc -O2 -o rtpgen rtpgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define PKT_LEN 172
#define HDR_LEN 12
#define MAXBATCH 256
#define RXBUF 2048
/* latency histogram: 1 µs buckets below 100 ms, 100 µs buckets from 100 ms to 10 s */
#define HIST_FINE 100000
#define HIST_NB (HIST_FINE + 99000)
#define MAXPIDS 8
#define SSRC_BASE 0x5B000000u

struct stream {
    int fd;
    uint16_t bind_port;
    struct sockaddr_in dest;
    uint32_t peer;        /* stream whose socket receives our packets */
    uint32_t slot;        /* tick slot within the packet interval */
    uint16_t seq0;
    uint32_t ts0;
    uint32_t next_pkt;    /* next packet number to send */
    /* receive side: counts of *this stream's* packets, wherever they arrived */
    uint64_t *seen;       /* bitmap of packet numbers received */
    uint32_t max_pkt;     /* highest packet number received + 1 (0: none) */
    uint64_t sent_w, recv_w, dup_w, reord_w;
};

struct cpu_snap {
    uint64_t ticks[MAXPIDS];   /* utime+stime over the threads */
    uint64_t run_ns[MAXPIDS];  /* schedstat: time on CPU */
    uint64_t wait_ns[MAXPIDS]; /* schedstat: time runnable, waiting for a CPU */
    int tasks[MAXPIDS];
    double self_s;
    uint64_t busy_all, busy_cpu[64];
    int ncpu;
    uint64_t t_ns;
};

static struct stream *st;
static uint32_t nstreams;
static int cpu_pids[MAXPIDS], ncpu_pids;
static uint64_t hist[HIST_NB], hist_over, lat_max_ns;
static uint64_t misrouted, ssrc_rewritten, seq_rewritten, not_ours, recv_late;
static uint64_t send_err, late_ticks, ticks_missed, sent_late_1ms, skipped_w, skipped;
static uint64_t send_lag_max_ns;
static volatile sig_atomic_t interrupted;

static void die(const char *msg)
{
    fprintf(stderr, "rtpgen: %s\n", msg);
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void on_signal(int sig) { (void)sig; interrupted = 1; }

/* ------------------------------------------------------------ /proc reads */

/* utime+stime of one /proc stat file; -1 if it is gone */
static long long stat_ticks(const char *path)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    /* after ") ": field 3 (state) ... utime is field 14, stime 15 */
    unsigned long long ut = 0, stt = 0;
    int field = 2;
    for (char *q = p + 1; *q; q++) {
        if (*q == ' ') {
            field++;
            if (field == 14) ut = strtoull(q + 1, NULL, 10);
            if (field == 15) { stt = strtoull(q + 1, NULL, 10); break; }
        }
    }
    return (long long)(ut + stt);
}

static void schedstat(const char *path, uint64_t *run, uint64_t *wait)
{
    FILE *f = fopen(path, "r");
    unsigned long long r = 0, w = 0;
    if (f) {
        if (fscanf(f, "%llu %llu", &r, &w) != 2) r = w = 0;
        fclose(f);
    }
    *run += r;
    *wait += w;
}

static void proc_busy(struct cpu_snap *s)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[512];
    s->ncpu = 0;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "cpu", 3) != 0) break;
        unsigned long long v[8] = { 0 };
        char name[16];
        if (sscanf(line, "%15s %llu %llu %llu %llu %llu %llu %llu %llu", name, &v[0], &v[1],
                   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 9)
            continue;
        /* user nice system idle iowait irq softirq steal: busy = all but idle, iowait */
        uint64_t busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        if (strcmp(name, "cpu") == 0) s->busy_all = busy;
        else if (s->ncpu < 64) s->busy_cpu[s->ncpu++] = busy;
    }
    fclose(f);
}

/* 0 ok, -1 a process is gone */
static int snap(struct cpu_snap *s)
{
    int rc = 0;
    memset(s, 0, sizeof *s);
    s->t_ns = now_ns();
    for (int k = 0; k < ncpu_pids; k++) {
        char path[128];
        snprintf(path, sizeof path, "/proc/%d/task", cpu_pids[k]);
        DIR *d = opendir(path);
        if (!d) { rc = -1; continue; }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!isdigit((unsigned char)e->d_name[0])) continue;
            char p2[320];
            snprintf(p2, sizeof p2, "/proc/%d/task/%s/stat", cpu_pids[k], e->d_name);
            long long t = stat_ticks(p2);
            if (t < 0) continue;     /* a thread that just exited */
            s->ticks[k] += (uint64_t)t;
            s->tasks[k]++;
            snprintf(p2, sizeof p2, "/proc/%d/task/%s/schedstat", cpu_pids[k], e->d_name);
            schedstat(p2, &s->run_ns[k], &s->wait_ns[k]);
        }
        closedir(d);
        if (s->tasks[k] == 0) rc = -1;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->self_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    proc_busy(s);
    return rc;
}

/* socket inodes held by the --cpu-pid processes, sorted */
static uint64_t *inodes;
static size_t ninodes;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void collect_inodes(void)
{
    size_t cap = 0;
    ninodes = 0;
    for (int k = 0; k < ncpu_pids; k++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/fd", cpu_pids[k]);
        DIR *d = opendir(path);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            char p2[352], link[64];
            snprintf(p2, sizeof p2, "%s/%s", path, e->d_name);
            ssize_t n = readlink(p2, link, sizeof link - 1);
            if (n <= 0) continue;
            link[n] = 0;
            unsigned long long ino;
            if (sscanf(link, "socket:[%llu]", &ino) != 1) continue;
            if (ninodes == cap) {
                cap = cap ? 2 * cap : 1024;
                inodes = realloc(inodes, cap * sizeof *inodes);
                if (!inodes) die("out of memory");
            }
            inodes[ninodes++] = ino;
        }
        closedir(d);
    }
    if (ninodes) qsort(inodes, ninodes, sizeof *inodes, cmp_u64);
}

/* drops of our own sockets (by local port) and of the target's (by inode) */
static void udp_drops(const uint8_t *ours, uint64_t *own, uint64_t *target)
{
    *own = *target = 0;
    FILE *f = fopen("/proc/net/udp", "r");
    char line[512];
    if (!f) return;
    if (!fgets(line, sizeof line, f)) { fclose(f); return; }
    while (fgets(line, sizeof line, f)) {
        unsigned la, lp, ra, rp, stt, uid, tmo;
        unsigned long long txq, rxq, ino, drops;
        char *p = strchr(line, ':');
        if (!p) continue;
        /* sl: local rem st tx:rx tr:tm retr uid timeout inode ref ptr drops */
        if (sscanf(p + 1, " %x:%x %x:%x %x %llx:%llx %*x:%*x %*x %u %u %llu %*u %*x %llu",
                   &la, &lp, &ra, &rp, &stt, &txq, &rxq, &uid, &tmo, &ino, &drops) != 11)
            continue;
        if (la == 0x0100007Fu && lp < 65536 && ours[lp]) *own += drops;
        else if (ninodes && bsearch(&ino, inodes, ninodes, sizeof *inodes, cmp_u64)) *target += drops;
    }
    fclose(f);
}

/* ---------------------------------------------------------------- packets */

static void build(struct stream *s, uint32_t i, uint32_t n, uint8_t *p)
{
    uint16_t seq = (uint16_t)(s->seq0 + n);
    uint32_t ts = s->ts0 + n * 160u, ssrc = SSRC_BASE + i;
    p[0] = 0x80;
    p[1] = 0; /* M=0, PT=0 PCMU */
    p[2] = (uint8_t)(seq >> 8); p[3] = (uint8_t)seq;
    p[4] = (uint8_t)(ts >> 24); p[5] = (uint8_t)(ts >> 16); p[6] = (uint8_t)(ts >> 8); p[7] = (uint8_t)ts;
    p[8] = (uint8_t)(ssrc >> 24); p[9] = (uint8_t)(ssrc >> 16); p[10] = (uint8_t)(ssrc >> 8); p[11] = (uint8_t)ssrc;
    memcpy(p + HDR_LEN + 8, &i, 4);
    memcpy(p + HDR_LEN + 12, &n, 4);
    /* bytes HDR_LEN+16.. stay 0xFF (µ-law silence); the send time goes in last */
}

int main(int argc, char **argv)
{
    const char *plan = NULL, *out = NULL;
    double warmup = 5, duration = 20;
    long drain_ms = 500, pps = 50, tick_us = 1000, batch = 32, catchup_ms = 20;

    for (int a = 1; a < argc; a++) {
        const char *k = argv[a];
        const char *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            fprintf(stderr, "usage: rtpgen --plan FILE [--warmup S] [--duration S] [--drain-ms MS] "
                            "[--pps N] [--tick-us US] [--max-catchup-ms MS] [--cpu-pid PID]... [--batch N] [--out FILE]\n");
            return 0;
        }
        if (!v) die("option without a value (see --help)");
        a++;
        if (!strcmp(k, "--plan")) plan = v;
        else if (!strcmp(k, "--out")) out = v;
        else if (!strcmp(k, "--warmup")) warmup = atof(v);
        else if (!strcmp(k, "--duration")) duration = atof(v);
        else if (!strcmp(k, "--drain-ms")) drain_ms = atol(v);
        else if (!strcmp(k, "--pps")) pps = atol(v);
        else if (!strcmp(k, "--tick-us")) tick_us = atol(v);
        else if (!strcmp(k, "--batch")) batch = atol(v);
        else if (!strcmp(k, "--max-catchup-ms")) catchup_ms = atol(v);
        else if (!strcmp(k, "--cpu-pid")) {
            if (ncpu_pids == MAXPIDS) die("too many --cpu-pid");
            cpu_pids[ncpu_pids++] = atoi(v);
        } else die("unknown option (see --help)");
    }
    if (!plan) die("--plan is required");
    if (warmup < 0 || duration <= 0 || drain_ms < 0 || pps < 1 || tick_us < 100 || batch < 1 || catchup_ms < 0 ||
        batch > MAXBATCH)
        die("bad --warmup/--duration/--drain-ms/--pps/--tick-us/--batch");
    uint64_t interval_ns = 1000000000ull / (uint64_t)pps, tick_ns = (uint64_t)tick_us * 1000;
    if (interval_ns % tick_ns) die("the packet interval (1/pps) must be a whole number of ticks");
    uint32_t slots = (uint32_t)(interval_ns / tick_ns);
    uint64_t warm_ticks = (uint64_t)(warmup * 1e9 / (double)tick_ns + 0.5);
    uint64_t dur_ticks = (uint64_t)(duration * 1e9 / (double)tick_ns + 0.5);
    uint64_t end_tick = warm_ticks + dur_ticks;
    uint64_t drain_ticks = (uint64_t)drain_ms * 1000000ull / tick_ns;
    uint64_t max_catchup = (uint64_t)catchup_ms * 1000000ull / tick_ns;
    /* packet numbers: n is scheduled at tick n*slots + slot */
    uint32_t max_pkts = (uint32_t)(end_tick / slots + 2);

    /* --- plan */
    FILE *pf = fopen(plan, "r");
    if (!pf) die("cannot open the plan");
    char line[256];
    size_t cap = 0;
    static uint8_t ours[65536];
    while (fgets(line, sizeof line, pf)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        unsigned bport, dport, peer;
        char ip[64];
        if (sscanf(line, "%u %63s %u %u", &bport, ip, &dport, &peer) != 4 || bport == 0 ||
            bport > 65535 || dport == 0 || dport > 65535) {
            fprintf(stderr, "rtpgen: bad plan line: %s", line);
            return 2;
        }
        if (nstreams == cap) {
            cap = cap ? 2 * cap : 256;
            st = realloc(st, cap * sizeof *st);
            if (!st) die("out of memory");
        }
        struct stream *s = &st[nstreams];
        memset(s, 0, sizeof *s);
        s->bind_port = (uint16_t)bport;
        s->dest.sin_family = AF_INET;
        s->dest.sin_port = htons((uint16_t)dport);
        if (inet_pton(AF_INET, ip, &s->dest.sin_addr) != 1) {
            fprintf(stderr, "rtpgen: bad address in plan: %s\n", ip);
            return 2;
        }
        s->peer = peer;
        if (ours[bport]) {
            fprintf(stderr, "rtpgen: port %u twice in the plan\n", bport);
            return 2;
        }
        ours[bport] = 1;
        nstreams++;
    }
    fclose(pf);
    if (nstreams == 0) die("empty plan");

    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1 failed");
    for (uint32_t i = 0; i < nstreams; i++) {
        struct stream *s = &st[i];
        if (s->peer >= nstreams) die("plan: PEER out of range");
        s->slot = i % slots;
        s->seq0 = (uint16_t)(i * 40503u + 12345u);
        s->ts0 = i * 2654435761u;
        s->seen = calloc((max_pkts + 63) / 64, sizeof(uint64_t));
        if (!s->seen) die("out of memory");
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->fd < 0) { perror("rtpgen: socket"); return 2; }
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(s->bind_port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(s->fd, (struct sockaddr *)&a, sizeof a) < 0) {
            fprintf(stderr, "rtpgen: bind 127.0.0.1:%u: %s\n", s->bind_port, strerror(errno));
            return 2;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) { perror("rtpgen: epoll_ctl"); return 2; }
    }
    /* per slot: the streams that send in it */
    uint32_t *slot_start = calloc(slots + 1, sizeof(uint32_t)), *by_slot = calloc(nstreams, sizeof(uint32_t));
    if (!slot_start || !by_slot) die("out of memory");
    for (uint32_t i = 0; i < nstreams; i++) slot_start[st[i].slot + 1]++;
    for (uint32_t k = 0; k < slots; k++) slot_start[k + 1] += slot_start[k];
    {
        uint32_t *fill = calloc(slots, sizeof(uint32_t));
        if (!fill) die("out of memory");
        for (uint32_t i = 0; i < nstreams; i++) by_slot[slot_start[st[i].slot] + fill[st[i].slot]++] = i;
        free(fill);
    }

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) die("timerfd_create failed");
    struct epoll_event tev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    collect_inodes();
    uint64_t own_drops0, tgt_drops0, own_drops1, tgt_drops1;
    udp_drops(ours, &own_drops0, &tgt_drops0);

    /* --- run: tick 0 is 10 ms from now */
    uint64_t t0 = now_ns() + 10000000ull;
    struct itimerspec its = {
        .it_interval = { .tv_sec = 0, .tv_nsec = (long)tick_ns },
        .it_value = { .tv_sec = (time_t)(t0 / 1000000000ull), .tv_nsec = (long)(t0 % 1000000000ull) },
    };
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime failed");
    fprintf(stderr, "rtpgen: %u streams at %ld pps, %u tick slots of %ld µs; warm-up %.1f s, window %.1f s\n",
            nstreams, pps, slots, tick_us, warmup, duration);

    static uint8_t rxbuf[MAXBATCH][RXBUF];
    static struct iovec iov[MAXBATCH];
    static struct mmsghdr msgs[MAXBATCH];
    static struct epoll_event evs[1024];
    uint8_t pkt[PKT_LEN];
    memset(pkt, 0xFF, sizeof pkt);
    struct cpu_snap c0, c1;
    int have_c0 = 0, have_c1 = 0, gone = 0;
    int64_t next_tick = 0; /* next tick to send */

    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        if (n < 0) {
            if (errno == EINTR) { if (interrupted) break; continue; }
            die("epoll_wait failed");
        }
        int timer = 0;
        for (int e = 0; e < n; e++) {
            uint32_t j = evs[e].data.u32;
            if (j == UINT32_MAX) { timer = 1; continue; }
            for (int k = 0; k < batch; k++) {
                iov[k].iov_base = rxbuf[k];
                iov[k].iov_len = RXBUF;
                msgs[k].msg_hdr = (struct msghdr){ .msg_iov = &iov[k], .msg_iovlen = 1 };
            }
            int got = recvmmsg(st[j].fd, msgs, (unsigned)batch, MSG_DONTWAIT, NULL);
            if (got <= 0) continue;
            uint64_t trx = now_ns();
            for (int k = 0; k < got; k++) {
                const uint8_t *p = rxbuf[k];
                if (msgs[k].msg_len < HDR_LEN + 16 || (p[0] & 0xC0) != 0x80 || (p[1] & 0x7F) != 0) {
                    not_ours++;     /* RTCP or anything else */
                    continue;
                }
                uint32_t i, pn;
                uint64_t tsend;
                memcpy(&tsend, p + HDR_LEN, 8);
                memcpy(&i, p + HDR_LEN + 8, 4);
                memcpy(&pn, p + HDR_LEN + 12, 4);
                if (i >= nstreams || pn >= max_pkts) { not_ours++; continue; }
                struct stream *s = &st[i];
                uint32_t ssrc = (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11];
                uint16_t seq = (uint16_t)(p[2] << 8 | p[3]);
                if (ssrc != SSRC_BASE + i) ssrc_rewritten++;
                if (seq != (uint16_t)(s->seq0 + pn)) seq_rewritten++;
                if (s->peer != j) misrouted++;
                uint64_t tick = (uint64_t)pn * slots + s->slot;
                int in_window = tick >= warm_ticks && tick < end_tick;
                uint64_t bit = 1ull << (pn & 63);
                if (s->seen[pn >> 6] & bit) {
                    if (in_window) s->dup_w++;
                    continue;
                }
                s->seen[pn >> 6] |= bit;
                if (pn + 1 < s->max_pkt) { if (in_window) s->reord_w++; }
                else s->max_pkt = pn + 1;
                if (!in_window) continue;
                s->recv_w++;
                uint64_t lat = trx > tsend ? trx - tsend : 0;
                if (lat > lat_max_ns) lat_max_ns = lat;
                uint64_t us = lat / 1000;
                if (us < HIST_FINE) hist[us]++;
                else if (us < 10000000) hist[HIST_FINE + (us - HIST_FINE) / 100]++;
                else hist_over++;
                if (have_c1) recv_late++;  /* arrived after the window closed (in the drain) */
            }
        }
        if (!timer) continue;
        uint64_t exp;
        if (read(tfd, &exp, sizeof exp) != sizeof exp) continue;
        uint64_t now = now_ns();
        int64_t cur = now < t0 ? -1 : (int64_t)((now - t0) / tick_ns);
        if (cur - next_tick >= 1) { late_ticks++; ticks_missed += (uint64_t)(cur - next_tick); }
        /* Catch up at most max_catchup ticks: after a longer stall the older
         * slots are skipped (not sent, so not counted as lost), instead of
         * bursting seconds of packets at the relay at once. */
        int64_t send_from = cur - (int64_t)max_catchup;
        for (; next_tick <= cur; next_tick++) {
            uint64_t tk = (uint64_t)next_tick;
            if (tk == warm_ticks && !have_c0) {
                if (snap(&c0) < 0) gone = 1;
                have_c0 = 1;
            }
            if (tk == end_tick) {
                if (snap(&c1) < 0) gone = 1;
                have_c1 = 1;
            }
            if (tk >= end_tick) continue;
            uint32_t slot = (uint32_t)(tk % slots), pn = (uint32_t)(tk / slots);
            int in_window = tk >= warm_ticks;
            if (next_tick < send_from) {
                uint32_t k = slot_start[slot + 1] - slot_start[slot];
                skipped += k;
                if (in_window) skipped_w += k;
                for (uint32_t x = slot_start[slot]; x < slot_start[slot + 1]; x++) st[by_slot[x]].next_pkt = pn + 1;
                continue;
            }
            uint64_t sched = t0 + tk * tick_ns;
            for (uint32_t x = slot_start[slot]; x < slot_start[slot + 1]; x++) {
                uint32_t i = by_slot[x];
                struct stream *s = &st[i];
                build(s, i, pn, pkt);
                uint64_t ts = now_ns();
                memcpy(pkt + HDR_LEN, &ts, 8);
                if (sendto(s->fd, pkt, PKT_LEN, 0, (struct sockaddr *)&s->dest, sizeof s->dest) != PKT_LEN)
                    send_err++;  /* still counted as sent: it is lost */
                s->next_pkt = pn + 1;
                if (in_window) s->sent_w++;
                uint64_t lag = ts > sched ? ts - sched : 0;
                if (lag > send_lag_max_ns) send_lag_max_ns = lag;
                if (lag > 1000000ull) sent_late_1ms++;
            }
        }
        if (interrupted) break;
        if (cur >= (int64_t)(end_tick + drain_ticks)) break;
    }
    if (interrupted) {
        fprintf(stderr, "rtpgen: interrupted\n");
        return 130;
    }
    udp_drops(ours, &own_drops1, &tgt_drops1);

    /* --- totals */
    uint64_t sent = 0, recv = 0, dup = 0, reord = 0, dead = 0, lossy = 0;
    double worst = 0;
    for (uint32_t i = 0; i < nstreams; i++) {
        struct stream *s = &st[i];
        sent += s->sent_w;
        recv += s->recv_w;
        dup += s->dup_w;
        reord += s->reord_w;
        if (s->recv_w == 0) dead++;
        if (s->recv_w < s->sent_w) {
            lossy++;
            double l = 100.0 * (double)(s->sent_w - s->recv_w) / (double)s->sent_w;
            if (l > worst) worst = l;
        }
    }
    uint64_t nlat = hist_over;
    for (uint32_t b = 0; b < HIST_NB; b++) nlat += hist[b];
    double pq[5] = { 50, 90, 99, 99.9, 99.99 }, pv[5];
    for (int q = 0; q < 5; q++) {
        /* nearest rank, in µs; the overflow bucket reads as the maximum */
        uint64_t rank = (uint64_t)((pq[q] / 100.0) * (double)nlat + 0.999999);
        if (rank < 1) rank = 1;
        uint64_t acc = 0;
        pv[q] = -1;
        for (uint32_t b = 0; b < HIST_NB && nlat; b++) {
            acc += hist[b];
            if (acc >= rank) { pv[q] = b < HIST_FINE ? b : HIST_FINE + (double)(b - HIST_FINE) * 100; break; }
        }
        if (pv[q] < 0 && nlat) pv[q] = (double)lat_max_ns / 1000.0;
    }

    FILE *o = stdout;
    if (out && !(o = fopen(out, "w"))) die("cannot write --out");
    double win_s = have_c0 && have_c1 ? (double)(c1.t_ns - c0.t_ns) / 1e9 : 0;
    long tck = sysconf(_SC_CLK_TCK);
    fprintf(o, "{\"streams\": %u, \"pps_per_stream\": %ld, \"warmup_s\": %g, \"duration_s\": %g, "
               "\"window_s\": %.6f, \"sent\": %" PRIu64 ", \"received\": %" PRIu64 ", \"lost\": %" PRId64 ", "
               "\"loss_pct\": %.5f, \"duplicates\": %" PRIu64 ", \"reordered\": %" PRIu64 ", "
               "\"misrouted\": %" PRIu64 ", \"ssrc_rewritten\": %" PRIu64 ", \"seq_rewritten\": %" PRIu64 ", "
               "\"not_ours\": %" PRIu64 ", \"received_in_drain\": %" PRIu64 ", \"dead_streams\": %" PRIu64 ", "
               "\"streams_with_loss\": %" PRIu64 ", \"worst_stream_loss_pct\": %.3f, "
               "\"send_errors\": %" PRIu64 ", \"late_ticks\": %" PRIu64 ", \"ticks_missed\": %" PRIu64 ", "
               "\"sent_late_1ms\": %" PRIu64 ", \"send_lag_max_us\": %.1f, \"skipped\": %" PRIu64 ", \"skipped_in_window\": %" PRIu64 ", "
               "\"latency_us\": {\"n\": %" PRIu64 ", \"p50\": %g, \"p90\": %g, \"p99\": %g, \"p99.9\": %g, "
               "\"p99.99\": %g, \"max\": %.1f, \"over_10s\": %" PRIu64 "}, "
               "\"drops\": {\"own\": %" PRIu64 ", \"target\": %" PRIu64 ", \"target_sockets\": %zu}, ",
            nstreams, pps, warmup, duration, win_s, sent, recv, (int64_t)(sent - recv),
            sent ? 100.0 * (double)(sent - recv) / (double)sent : 0.0, dup, reord, misrouted,
            ssrc_rewritten, seq_rewritten, not_ours, recv_late, dead, lossy, worst, send_err, late_ticks,
            ticks_missed, sent_late_1ms, (double)send_lag_max_ns / 1000.0, skipped, skipped_w, nlat, pv[0], pv[1], pv[2], pv[3],
            pv[4], (double)lat_max_ns / 1000.0, hist_over, own_drops1 - own_drops0,
            tgt_drops1 - tgt_drops0, ninodes);
    fprintf(o, "\"cpu\": {\"clk_tck\": %ld, \"self_s\": %.4f, \"busy_all_s\": %.3f, \"busy_cpu_s\": [",
            tck, have_c1 ? c1.self_s - c0.self_s : 0.0,
            have_c1 ? (double)(c1.busy_all - c0.busy_all) / (double)tck : 0.0);
    for (int c = 0; have_c1 && c < c1.ncpu; c++)
        fprintf(o, "%s%.3f", c ? ", " : "", (double)(c1.busy_cpu[c] - c0.busy_cpu[c]) / (double)tck);
    fprintf(o, "], \"targets\": [");
    for (int k = 0; k < ncpu_pids; k++)
        fprintf(o, "%s{\"pid\": %d, \"threads\": %d, \"cpu_s\": %.4f, \"run_s\": %.6f, \"runq_wait_s\": %.6f}",
                k ? ", " : "", cpu_pids[k], have_c1 ? c1.tasks[k] : 0,
                have_c1 ? (double)(c1.ticks[k] - c0.ticks[k]) / (double)tck : 0.0,
                have_c1 ? (double)(c1.run_ns[k] - c0.run_ns[k]) / 1e9 : 0.0,
                have_c1 ? (double)(c1.wait_ns[k] - c0.wait_ns[k]) / 1e9 : 0.0);
    fprintf(o, "], \"target_gone\": %s}}\n", gone ? "true" : "false");
    if (o != stdout) fclose(o);
    return gone ? 1 : 0;
}
