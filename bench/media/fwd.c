/*
 * fwd.c - the raw RTP forwarder: the floor a relay's CPU per packet is
 * compared with (bench/media, issue #4).
 *
 *   fwd BASE_PORT PAIRS [BATCH]
 *
 * Binds 2 x PAIRS UDP sockets on 127.0.0.1: socket j on BASE_PORT + 2j
 * (even ports, like RTP). Sockets 2i (side A) and 2i+1 (side B) form pair i,
 * one call. A datagram that arrives on A is sent from B to the last source
 * address seen on B, and one that arrives on B is sent from A to the last
 * source seen on A: symmetric latching, as a media relay does it (RFC 4961
 * symmetric RTP). Until the other side has sent a packet, packets are dropped
 * (counted as "unlatched").
 *
 * One thread, one epoll set (level-triggered). For each ready socket: one
 * recvmmsg of up to BATCH (default 32) datagrams, MSG_DONTWAIT; the source of
 * the last one becomes that socket's latched peer; then one sendmmsg of the
 * batch on the partner socket. Nothing else: no parsing, no copying, no
 * timers. The payload is never touched.
 *
 * Prints "ready" on stdout once every socket is bound. On SIGTERM or SIGINT
 * it prints its counters (received, sent, unlatched drops, send errors) as
 * one JSON line on stdout and exits 0. Exits 2 when a socket cannot be bound
 * (port in use) or on a bad argument.
 *
 * Build: cc -O2 -o fwd fwd.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXBATCH 1024
#define MAXDGRAM 2048

struct side {
    int fd;
    int latched;                 /* a packet has arrived: `peer` is valid */
    struct sockaddr_in peer;     /* last source address seen on this socket */
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: fwd BASE_PORT PAIRS [BATCH]\n");
        return 2;
    }
    long base = strtol(argv[1], NULL, 10);
    long pairs = strtol(argv[2], NULL, 10);
    long batch = argc > 3 ? strtol(argv[3], NULL, 10) : 32;
    if (base < 1 || pairs < 1 || base + 4 * pairs > 65536 || batch < 1 || batch > MAXBATCH) {
        fprintf(stderr, "fwd: bad argument (BASE_PORT + 4 x PAIRS must stay below 65536,"
                " BATCH 1..%d)\n", MAXBATCH);
        return 2;
    }
    int nsock = (int)(2 * pairs);
    struct side *s = calloc((size_t)nsock, sizeof *s);
    int ep = epoll_create1(0);
    if (!s || ep < 0) { perror("fwd: setup"); return 2; }

    for (int j = 0; j < nsock; j++) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)(base + 2 * j)) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s[j].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s[j].fd < 0) { perror("fwd: socket"); return 2; }
        if (bind(s[j].fd, (struct sockaddr *)&a, sizeof a) < 0) {
            fprintf(stderr, "fwd: bind 127.0.0.1:%ld: %s\n", base + 2 * j, strerror(errno));
            return 2;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)j };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, s[j].fd, &ev) < 0) { perror("fwd: epoll_ctl"); return 2; }
    }

    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("ready\n");
    fflush(stdout);

    static char buf[MAXBATCH][MAXDGRAM];
    static struct iovec iov[MAXBATCH];
    static struct mmsghdr in[MAXBATCH], out[MAXBATCH];
    static struct sockaddr_in src[MAXBATCH];
    static struct epoll_event evs[256];
    uint64_t rx = 0, tx = 0, unlatched = 0, send_err = 0;

    for (int k = 0; k < batch; k++) {
        iov[k].iov_base = buf[k];
        iov[k].iov_len = MAXDGRAM;
    }

    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("fwd: epoll_wait");
            return 1;
        }
        for (int e = 0; e < n; e++) {
            int j = (int)evs[e].data.u32;
            struct side *me = &s[j], *other = &s[j ^ 1];
            for (int k = 0; k < batch; k++) {
                iov[k].iov_len = MAXDGRAM;
                in[k].msg_hdr = (struct msghdr){
                    .msg_name = &src[k], .msg_namelen = sizeof src[k],
                    .msg_iov = &iov[k], .msg_iovlen = 1,
                };
            }
            int got = recvmmsg(me->fd, in, (unsigned)batch, MSG_DONTWAIT, NULL);
            if (got <= 0) continue;          /* EAGAIN (spurious wake-up) or an ICMP error */
            rx += (uint64_t)got;
            me->latched = 1;
            me->peer = src[got - 1];
            if (!other->latched) { unlatched += (uint64_t)got; continue; }
            for (int k = 0; k < got; k++) {
                /* the received length becomes the length to send */
                iov[k].iov_len = in[k].msg_len;
                out[k].msg_hdr = (struct msghdr){
                    .msg_name = &other->peer, .msg_namelen = sizeof other->peer,
                    .msg_iov = &iov[k], .msg_iovlen = 1,
                };
            }
            int done = 0;
            while (done < got) {
                int r = sendmmsg(other->fd, out + done, (unsigned)(got - done), 0);
                if (r < 0) {
                    if (errno == EINTR) continue;
                    send_err++;   /* the first datagram left failed (ENOBUFS, ...): skip it */
                    done++;
                    continue;
                }
                done += r;
                tx += (uint64_t)r;
            }
        }
    }
    printf("{\"rx\": %llu, \"tx\": %llu, \"unlatched\": %llu, \"send_errors\": %llu}\n",
           (unsigned long long)rx, (unsigned long long)tx,
           (unsigned long long)unlatched, (unsigned long long)send_err);
    return 0;
}
