/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* ---- the wal-index (-shm) ------------------------------------------------ */

/* Its layout (wal.c struct WalIndexHdr, struct WalCkptInfo, HASHTABLE_*;
 * walformat.html section 2): two copies of a 48-byte header and the
 * checkpoint information, 136 bytes in all, then index blocks of 32 KiB,
 * each 4096 page numbers (4062 in the first, after the header) and a hash
 * table. Integers are in the host's byte order; the salts are the -wal
 * header's bytes as they are. */
#define SHM_HDR_SIZE 48                 /* one copy of the header */
#define SHM_HDR_SUMMED 40               /* the bytes its checksum covers */
#define SHM_HDR_AREA 136                /* both copies and WalCkptInfo */
#define SHM_BLOCK_SIZE 32768            /* an index block */
#define SHM_BLOCK_FRAMES 4096           /* page numbers in a block */
#define SHM_BLOCK0_FRAMES (SHM_BLOCK_FRAMES - SHM_HDR_AREA / 4) /* 4062 */
#define SHM_DMS_BYTE 128                /* os_unix.c UNIX_SHM_DMS: after the 8 lock bytes at 120 */
#define SHM_VERSION 3007000u            /* WALINDEX_MAX_VERSION */
#define SHM_TRIES 3                     /* reads of a log that moves under them */

/* Offsets in one copy of the header. */
#define HDR_VERSION 0                   /* iVersion */
#define HDR_IS_INIT 12                  /* isInit, a byte */
#define HDR_BIG_END 13                  /* bigEndCksum, a byte: the -wal's checksum order */
#define HDR_PAGE_SIZE 14                /* szPage, 16 bits: 1 means 65536 */
#define HDR_MX_FRAME 16                 /* mxFrame: the last commit frame */
#define HDR_N_PAGE 20                   /* nPage: the database size after it */
#define HDR_FRAME_CKSUM 24              /* aFrameCksum: frame mxFrame's checksum */
#define HDR_SALT 32                     /* aSalt: the -wal header's bytes 16..23 */
#define HDR_CKSUM 40                    /* aCksum: over bytes 0..39 */

static uint32_t ne32(const unsigned char *p)
{
        uint32_t v;

        memcpy(&v, p, sizeof(v));
        return v;
}

static uint16_t ne16(const unsigned char *p)
{
        uint16_t v;

        memcpy(&v, p, sizeof(v));
        return v;
}

static bool host_big_endian(void)
{
        static const unsigned char one[4] = { 0, 0, 0, 1 };

        return ne32(one) == 1;
}

/* Where frame i (1-based) starts in the -wal. */
static off_t frame_offset(uint32_t i, uint32_t page_size)
{
        return WAL_HEADER_SIZE + (off_t)(i - 1) * (WAL_FRAME_HEADER_SIZE + page_size);
}

/* What a try takes from the header. */
struct shm_hdr {
        unsigned char raw[2 * SHM_HDR_SIZE];    /* both copies, as read */
        uint32_t mx_frame, n_page;
        uint32_t page_size;                     /* 0 when no commit since a recovery */
        bool big_endian;
};

/* Whether a connection keeps the -shm current: whether another process
 * holds a lock on its DMS byte that a write lock would conflict with
 * (os_unix.c unixLockSharedMemory()). F_GETLK only asks. Returns 0 for a
 * read lock (connections use the index), -EAGAIN for a write lock (the
 * first connection is truncating and rebuilding it), -ESTALE for none,
 * -errno. */
static int shm_in_use(int fd)
{
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SHM_DMS_BYTE, .l_len = 1 };

        if (fcntl(fd, F_GETLK, &fl) < 0)
                return -errno;
        if (fl.l_type == F_UNLCK)
                return -ESTALE;
        return fl.l_type == F_RDLCK ? 0 : -EAGAIN;
}

/* Both copies of the header. A shorter file is one being set up (the
 * first connection truncates it to 3 bytes). Returns 0, -EAGAIN, -errno. */
static int shm_read_hdr(int fd, unsigned char raw[2 * SHM_HDR_SIZE])
{
        ssize_t n = pread_full(fd, raw, 2 * SHM_HDR_SIZE, 0);

        if (n < 0)
                return (int)n;
        return n < 2 * SHM_HDR_SIZE ? -EAGAIN : 0;
}

/* walIndexTryHdr()'s checks (the copies differ while a writer writes
 * them: it writes the second first, readers read the first first), then
 * walIndexReadHdr()'s version check and the page size the caller knows.
 * A recovery that found no commit leaves szPage 0 (walIndexRecover()), so
 * the page size counts only with frames. Returns 0 or -EAGAIN. */
static int shm_check_hdr(struct shm_hdr *h, uint32_t page_size)
{
        const unsigned char *p = h->raw;
        uint32_t s[2] = { 0, 0 };
        uint16_t sz;

        if (memcmp(p, p + SHM_HDR_SIZE, SHM_HDR_SIZE) != 0 || p[HDR_IS_INIT] == 0)
                return -EAGAIN;
        checksum(host_big_endian(), p, SHM_HDR_SUMMED, s);
        if (s[0] != ne32(p + HDR_CKSUM) || s[1] != ne32(p + HDR_CKSUM + 4))
                return -EAGAIN;
        if (ne32(p + HDR_VERSION) != SHM_VERSION)
                return -EAGAIN; /* SQLite: SQLITE_CANTOPEN */
        sz = ne16(p + HDR_PAGE_SIZE);
        h->page_size = (sz & 0xfe00u) + ((uint32_t)(sz & 1u) << 16);
        h->mx_frame = ne32(p + HDR_MX_FRAME);
        h->n_page = ne32(p + HDR_N_PAGE);
        h->big_endian = p[HDR_BIG_END] != 0;
        if (h->mx_frame > 0 && h->page_size != page_size)
                return -EAGAIN;
        return 0;
}

/* The -wal the header describes: its header valid (magic, version, page
 * size, checksum) with the index's checksum order and salts; the file long
 * enough for mxFrame frames; frame mxFrame a commit of nPage pages with
 * the index's salts and frame checksum (walFrames() sets aFrameCksum to
 * the last frame's). Sets *last_pgno to that frame's page number. Returns
 * 0, -EAGAIN, -errno. */
static int shm_check_wal(int fd, const struct shm_hdr *h, uint32_t *last_pgno)
{
        unsigned char w[WAL_HEADER_SIZE], f[WAL_FRAME_HEADER_SIZE];
        const unsigned char *salt = h->raw + HDR_SALT;
        off_t end = frame_offset(h->mx_frame + 1, h->page_size);
        uint32_t s[2] = { 0, 0 }, magic;
        struct stat st;
        ssize_t n;

        n = pread_full(fd, w, sizeof(w), 0);
        if (n < 0)
                return (int)n;
        if (n < WAL_HEADER_SIZE)
                return -EAGAIN;
        magic = be32(w);
        if ((magic & ~1u) != WAL_MAGIC || (magic & 1u) != h->big_endian || be32(w + 4) != WAL_VERSION ||
            be32(w + 8) != h->page_size || memcmp(w + 16, salt, 8) != 0)
                return -EAGAIN;
        checksum(h->big_endian, w, 24, s);
        if (s[0] != be32(w + 24) || s[1] != be32(w + 28))
                return -EAGAIN;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size < end)
                return -EAGAIN;
        n = pread_full(fd, f, sizeof(f), frame_offset(h->mx_frame, h->page_size));
        if (n < 0)
                return (int)n;
        if (n < WAL_FRAME_HEADER_SIZE || be32(f) == 0 || h->n_page == 0 || be32(f + 4) != h->n_page ||
            memcmp(f + 8, salt, 8) != 0 || be32(f + 16) != ne32(h->raw + HDR_FRAME_CKSUM) ||
            be32(f + 20) != ne32(h->raw + HDR_FRAME_CKSUM + 4))
                return -EAGAIN;
        *last_pgno = be32(f);
        return 0;
}

/* Where frame i's page number is in the -shm (walformat.html 2.2: the
 * aPgno arrays as one array). */
static off_t shm_pgno_offset(uint32_t i)
{
        if (i <= SHM_BLOCK0_FRAMES)
                return SHM_HDR_AREA + (off_t)(i - 1) * 4;
        i -= SHM_BLOCK0_FRAMES + 1;
        return (off_t)(i / SHM_BLOCK_FRAMES + 1) * SHM_BLOCK_SIZE + (off_t)(i % SHM_BLOCK_FRAMES) * 4;
}

/* The first frame of the index block that holds frame i. */
static uint32_t shm_block_first(uint32_t i)
{
        if (i <= SHM_BLOCK0_FRAMES)
                return 1;
        return i - (i - SHM_BLOCK0_FRAMES - 1) % SHM_BLOCK_FRAMES;
}

/* The newest frame of page 1 in 1..mxFrame, scanning the page numbers
 * down from mxFrame a block (at most 16 KiB) per pread() into buf; 0 in
 * *ret when there is none. Entries above mxFrame may be a rolled-back
 * transaction's and are never read; one at or below it is never 0
 * (walIndexAppend() zeroes a block when its first frame is written), so a
 * 0 is an index being rebuilt, as is a top entry other than the -wal's.
 * Returns 0, -EAGAIN, -errno. */
static int shm_find_page1(int fd, const struct shm_hdr *h, uint32_t last_pgno, unsigned char *buf, uint32_t *ret)
{
        uint32_t top = h->mx_frame;

        *ret = 0;
        while (top > 0) {
                uint32_t first = shm_block_first(top), n = top - first + 1;
                ssize_t k = pread_full(fd, buf, (size_t)n * 4, shm_pgno_offset(first));

                if (k < 0)
                        return (int)k;
                if ((size_t)k < (size_t)n * 4 || (top == h->mx_frame && ne32(buf + (n - 1) * 4) != last_pgno))
                        return -EAGAIN;
                for (uint32_t j = n; j-- > 0;) {
                        uint32_t pgno = ne32(buf + j * 4);

                        if (pgno == 0)
                                return -EAGAIN;
                        if (pgno == 1) {
                                *ret = first + j;
                                return 0;
                        }
                }
                top = first - 1;
        }
        return 0;
}

/* Page 1's first bytes from frame i, which must be page 1's and this
 * log's (its salts). Returns 0, -EAGAIN, -errno. */
static int wal_page1(int fd, const struct shm_hdr *h, uint32_t i, unsigned char page1[WALREAD_PAGE1_BYTES])
{
        unsigned char f[WAL_FRAME_HEADER_SIZE + WALREAD_PAGE1_BYTES];
        ssize_t n = pread_full(fd, f, sizeof(f), frame_offset(i, h->page_size));

        if (n < 0)
                return (int)n;
        if (n < (ssize_t)sizeof(f) || be32(f) != 1 || memcmp(f + 8, h->raw + HDR_SALT, 8) != 0)
                return -EAGAIN;
        memcpy(page1, f + WAL_FRAME_HEADER_SIZE, WALREAD_PAGE1_BYTES);
        return 0;
}

/* Page 1's first bytes from the main file. Returns 0, -EAGAIN (shorter:
 * then page 1 must have been in the -wal), -errno. */
static int main_page1(int fd, unsigned char page1[WALREAD_PAGE1_BYTES])
{
        ssize_t n = pread_full(fd, page1, WALREAD_PAGE1_BYTES, 0);

        if (n < 0)
                return (int)n;
        return n < WALREAD_PAGE1_BYTES ? -EAGAIN : 0;
}

/* The main file's size in pages, rounded up (pager.c pagerPagecount(),
 * used when the index's nPage is 0). Returns 0, -EAGAIN, -errno. */
static int main_page_count(int fd, uint32_t page_size, uint32_t *ret)
{
        struct stat st;
        uint64_t pages;

        if (fstat(fd, &st) < 0)
                return -errno;
        pages = ((uint64_t)st.st_size + page_size - 1) / page_size;
        if (pages > UINT32_MAX)
                return -EAGAIN;
        *ret = (uint32_t)pages;
        return 0;
}

/* The descriptors and the scan buffer a try reads with. */
struct shm_files {
        int db, wal, shm;
        uint32_t page_size;
        unsigned char *buf;     /* SHM_BLOCK_FRAMES page numbers */
};

/* One snapshot: the header, what it points at, the header again. Returns
 * 0 with out filled, -EAGAIN, -errno. */
static int shm_try(const struct shm_files *f, struct walread *out)
{
        unsigned char again[2 * SHM_HDR_SIZE];
        uint32_t last_pgno = 0, frame = 0;
        struct shm_hdr h;
        int r;

        r = shm_read_hdr(f->shm, h.raw);
        if (r == 0)
                r = shm_check_hdr(&h, f->page_size);
        if (r < 0)
                return r;
        *out = (struct walread){ .page_size = f->page_size, .frames = h.mx_frame, .page_count = h.n_page };
        if (h.mx_frame > 0) {
                r = shm_check_wal(f->wal, &h, &last_pgno);
                if (r == 0)
                        r = shm_find_page1(f->shm, &h, last_pgno, f->buf, &frame);
                if (r == 0 && frame > 0)
                        r = wal_page1(f->wal, &h, frame, out->page1);
        }
        if (r == 0 && frame == 0)
                r = main_page1(f->db, out->page1);
        if (r == 0 && out->page_count == 0)
                r = main_page_count(f->db, f->page_size, &out->page_count);
        if (r == 0)
                r = shm_read_hdr(f->shm, again);
        if (r < 0)
                return r;
        out->page1_in_wal = frame > 0;
        /* A commit, a reset or a rebuild since: what was read may mix them. */
        return memcmp(again, h.raw, sizeof(again)) == 0 ? 0 : -EAGAIN;
}

int walread_shm(int db_fd, int wal_fd, int shm_fd, uint32_t page_size, struct walread *ret)
{
        struct shm_files f = { .db = db_fd, .wal = wal_fd, .shm = shm_fd, .page_size = page_size };
        struct walread out;
        int r;

        if (page_size < 512 || page_size > 65536 || (page_size & (page_size - 1)) != 0)
                return -EINVAL;
        r = shm_in_use(shm_fd);
        if (r < 0)
                return r;
        f.buf = malloc((size_t)SHM_BLOCK_FRAMES * 4);
        if (!f.buf)
                return -ENOMEM;
        for (int i = 0; i < SHM_TRIES; i++) {
                r = shm_try(&f, &out);
                if (r != -EAGAIN)
                        break;
        }
        free(f.buf);
        /* The last connection may have gone meanwhile (and with it the
         * -shm's link): a header unchanged since may be a dead one's. */
        if (r == 0)
                r = shm_in_use(shm_fd);
        if (r == 0)
                *ret = out;
        return r;
}
