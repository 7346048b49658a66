/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "walread.h"

#define WAL_HEADER_SIZE 32
#define WAL_FRAME_HEADER_SIZE 24
#define WAL_MAGIC 0x377f0682u /* the low bit set: big-endian checksums */
#define WAL_VERSION 3007000u
/* Frames read per pread(): a few hundred KiB at the usual page size. */
#define FRAMES_PER_READ 64

static uint32_t be32(const unsigned char *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const unsigned char *p)
{
        return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* SQLite's WAL checksum (fileformat2.html): over 32-bit words in the byte
 * order the magic names, s0 += x[i] + s1, s1 += x[i+1] + s0, continued
 * from s. n is a multiple of 8. */
static void checksum(bool big_endian, const unsigned char *p, size_t n, uint32_t s[2])
{
        uint32_t s0 = s[0], s1 = s[1];

        for (size_t i = 0; i < n; i += 8) {
                uint32_t x0 = big_endian ? be32(p + i) : le32(p + i);
                uint32_t x1 = big_endian ? be32(p + i + 4) : le32(p + i + 4);

                s0 += x0 + s1;
                s1 += x1 + s0;
        }
        s[0] = s0;
        s[1] = s1;
}

static ssize_t pread_full(int fd, unsigned char *buf, size_t n, off_t off)
{
        size_t got = 0;

        while (got < n) {
                ssize_t k = pread(fd, buf + got, n - got, off + (off_t)got);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                got += (size_t)k;
        }
        return (ssize_t)got;
}

/* What the scan carries from frame to frame. */
struct wal_scan {
        bool big_endian;                /* the checksums' byte order, from the magic */
        uint32_t salt1, salt2;          /* a frame belongs to this log only with these */
        uint32_t s[2];                  /* the cumulative checksum so far */
        uint32_t frame;                 /* valid frames so far */
        bool have_pending1;             /* a page 1 image not yet committed */
        unsigned char pending1[WALREAD_PAGE1_BYTES];
};

/* The WAL header, in walIndexRecover()'s order: magic and page size (the
 * WAL header holds it as is: 65536 is 65536), then the header checksum; a
 * log failing those holds no frame. A valid header of another version
 * SQLite refuses to open (SQLITE_CANTOPEN): only it can say so. Returns 1
 * when frames may follow (sc set up), 0 when none can, -EPROTO or -errno. */
static int read_wal_header(int fd, uint32_t page_size, struct wal_scan *sc)
{
        unsigned char hdr[WAL_HEADER_SIZE];
        uint32_t magic, wal_page_size;
        ssize_t n;

        n = pread_full(fd, hdr, sizeof(hdr), 0);
        if (n < 0)
                return (int)n;
        if (n < WAL_HEADER_SIZE)
                return 0; /* empty or cut short: no frame SQLite would read */
        magic = be32(hdr);
        wal_page_size = be32(hdr + 8);
        if ((magic & ~1u) != WAL_MAGIC || wal_page_size < 512 || wal_page_size > 65536 ||
            (wal_page_size & (wal_page_size - 1)) != 0)
                return 0;
        sc->big_endian = magic & 1u;
        checksum(sc->big_endian, hdr, 24, sc->s);
        if (sc->s[0] != be32(hdr + 24) || sc->s[1] != be32(hdr + 28))
                return 0;
        if (be32(hdr + 4) != WAL_VERSION || wal_page_size != page_size)
                return -EPROTO;
        sc->salt1 = be32(hdr + 16);
        sc->salt2 = be32(hdr + 20);
        return 1;
}

/* One frame f: false when it does not belong to this log (its salts, its
 * cumulative checksum), which ends the log; a commit makes what came
 * before it the database in ret. */
static bool take_frame(struct wal_scan *sc, const unsigned char *f, uint32_t page_size, struct walread *ret)
{
        uint32_t pgno = be32(f), commit = be32(f + 4);

        if (pgno == 0 || be32(f + 8) != sc->salt1 || be32(f + 12) != sc->salt2)
                return false;
        checksum(sc->big_endian, f, 8, sc->s);
        checksum(sc->big_endian, f + WAL_FRAME_HEADER_SIZE, page_size, sc->s);
        if (sc->s[0] != be32(f + 16) || sc->s[1] != be32(f + 20))
                return false;
        sc->frame++;
        if (pgno == 1) {
                memcpy(sc->pending1, f + WAL_FRAME_HEADER_SIZE, sizeof(sc->pending1));
                sc->have_pending1 = true;
        }
        if (commit != 0) {
                /* A commit: what came before it is the database now. */
                ret->frames = sc->frame;
                ret->page_count = commit;
                if (sc->have_pending1) {
                        memcpy(ret->page1, sc->pending1, sizeof(ret->page1));
                        ret->page1_in_wal = true;
                        sc->have_pending1 = false;
                }
        }
        return true;
}

int walread_scan(int fd, uint32_t page_size, struct walread *ret)
{
        struct wal_scan sc = { .frame = 0 };
        size_t frame_size, want;
        unsigned char *buf;
        off_t off;
        ssize_t n;
        int r;

        *ret = (struct walread){ .page_size = page_size };
        r = read_wal_header(fd, page_size, &sc);
        if (r <= 0)
                return r;
        frame_size = WAL_FRAME_HEADER_SIZE + (size_t)page_size;
        buf = malloc(frame_size * FRAMES_PER_READ);
        if (!buf)
                return -ENOMEM;
        off = WAL_HEADER_SIZE;
        for (;;) {
                want = frame_size * FRAMES_PER_READ;
                n = pread_full(fd, buf, want, off);
                if (n < 0) {
                        free(buf);
                        return (int)n;
                }
                for (size_t k = 0; k < (size_t)n / frame_size; k++)
                        if (!take_frame(&sc, buf + k * frame_size, page_size, ret))
                                goto done;
                if ((size_t)n < want)
                        break; /* the end of the file */
                off += (off_t)want;
        }
done:
        free(buf);
        return 0;
}
