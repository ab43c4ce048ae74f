/* The built-in camouflage set: procedural images whose objects wear nearly the
 * background's texture, with exact masks.
 *
 * A "material" is a procedural texture: a base colour, plus a blotchy main pattern
 * (fractal value noise, stretched along an orientation, pushed through a soft clip so it
 * forms patches like a camouflage print) along a mostly-luminance colour axis, plus a
 * finer isotropic field along a second colour axis, plus per-pixel grain. Each image has
 * a background material with random colours and pattern, and one object material made
 * from it by small changes: the pattern turned by 20-60 degrees, its scale changed by
 * 15-40 %, its anisotropy and blotchiness by up to 30 %, the contrast by up to 15 %, and
 * the base colour moved by 10-30 % of the pattern amplitude in a random direction. So
 * colour alone hardly separates object from background (across images the shift points
 * anywhere); texture orientation, scale and the seam at the boundary do.
 *
 * Objects: 1 to 3 blobs whose radius around a centre is R (1 + sum_k a_k cos(k phi + p_k)),
 * k = 2..5 (smooth random shapes), together covering about 6-30 % of the image. The mask
 * is the exact set of pixels (centres) that were painted with the object material.
 * A global lighting gradient over the whole frame removes absolute brightness as a cue.
 *
 * Determinism: image i of a split depends only on (seed, stream, index); images are made
 * one per task, each serially, so the bytes do not depend on the thread count. */
#include "data.h"
#include "../core/rng.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#define LATTICE 64 /* periodic value-noise lattice, LATTICE x LATTICE (power of two) */
#define MAIN_OCTAVES 3
#define FINE_OCTAVES 2
#define TABLES_PER_MATERIAL (MAIN_OCTAVES + FINE_OCTAVES)
#define MAX_OBJECTS 3
#define SYN_STREAM_BASE 0x73796E7468657469ull /* "syntheti" */
#define DRAWS_PER_IMAGE 256

typedef struct {
    float base[3];
    float axis_main[3], axis_fine[3]; /* colour directions scaled by amplitude */
    float cos_t, sin_t;               /* main pattern orientation */
    float inv_cell_along, inv_cell_across;
    float inv_cell_fine;
    float sharpness;                  /* gain before the soft clip */
    float grain;
    float shift_u, shift_v;           /* whole lattice periods that keep u, v >= 0 */
    const float *tables;              /* TABLES_PER_MATERIAL lattices */
} material;

typedef struct {
    float cx, cy, radius, reach;      /* reach: radius * (1 + sum |a_k|) */
    float a_cos[4], a_sin[4];         /* a_k cos p_k, a_k sin p_k for k = 2..5 */
    float offset_u, offset_v;         /* lattice offset: each object its own patch */
} blob;

typedef struct {
    uint64_t seed, stream;
    uint64_t index;
} draw_key;

static double draw(const draw_key *key, int k) {
    return cx_rng_uniform(key->seed, key->stream, key->index * DRAWS_PER_IMAGE + (uint64_t)k);
}

static double uniform(const draw_key *key, int k, double lo, double hi) {
    return lo + (hi - lo) * draw(key, k);
}

/* Fills `count` floats with uniform values in [-1, 1) from a sequential SplitMix64
 * stream started at `state` (cheaper than one counter draw per value). */
static void fill_lattice(float *out, size_t count, uint64_t state) {
    for (size_t i = 0; i < count; i += 2) {
        state += 0x9E3779B97F4A7C15ull;
        uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        out[i] = (float)((double)(uint32_t)z * (2.0 / 4294967296.0) - 1.0);
        if (i + 1 < count)
            out[i + 1] = (float)((double)(uint32_t)(z >> 32) * (2.0 / 4294967296.0) - 1.0);
    }
}

static inline float smooth(float t) { return t * t * (3.0f - 2.0f * t); }

/* Value noise on a periodic lattice, smoothstep-interpolated; about [-1, 1].
 * u, v >= 0 (callers shift by whole periods), so truncation is floor. */
static inline float value_noise(const float *lattice, float u, float v) {
    int fu = (int)u, fv = (int)v;
    int iu = fu & (LATTICE - 1), iv = fv & (LATTICE - 1);
    int iu1 = (iu + 1) & (LATTICE - 1), iv1 = (iv + 1) & (LATTICE - 1);
    float tu = smooth(u - (float)fu), tv = smooth(v - (float)fv);
    const float *row0 = lattice + iv * LATTICE, *row1 = lattice + iv1 * LATTICE;
    float top = row0[iu] + tu * (row0[iu1] - row0[iu]);
    float bottom = row1[iu] + tu * (row1[iu1] - row1[iu]);
    return top + tv * (bottom - top);
}

static inline float fractal(const float *tables, int octaves, float u, float v) {
    float sum = 0.0f, amplitude = 1.0f;
    for (int o = 0; o < octaves; o++) {
        sum += amplitude * value_noise(tables + (size_t)o * LATTICE * LATTICE, u, v);
        u *= 2.0f;
        v *= 2.0f;
        amplitude *= 0.5f;
    }
    return sum;
}

/* Colour of material m at pixel centre (px, py), before lighting and grain. */
static inline void shade(const material *m, float px, float py, float offset_u, float offset_v,
                         float rgb[3]) {
    float u = (px * m->cos_t + py * m->sin_t) * m->inv_cell_along + offset_u + m->shift_u;
    float v = (py * m->cos_t - px * m->sin_t) * m->inv_cell_across + offset_v + m->shift_v;
    float main = m->sharpness * fractal(m->tables, MAIN_OCTAVES, u, v);
    main = main / (1.0f + fabsf(main));
    const float *fine_tables = m->tables + (size_t)MAIN_OCTAVES * LATTICE * LATTICE;
    float fine = fractal(fine_tables, FINE_OCTAVES, px * m->inv_cell_fine + offset_v,
                         py * m->inv_cell_fine + offset_u);
    for (int c = 0; c < 3; c++)
        rgb[c] = m->base[c] + main * m->axis_main[c] + fine * m->axis_fine[c];
}

/* Whole periods to add to the rotated coordinates so they stay >= 0 over the image. */
static void set_shifts(material *m, int size) {
    double reach = (double)size * (fabs(m->cos_t) + fabs(m->sin_t));
    m->shift_u = (float)(LATTICE * ceil(reach * m->inv_cell_along / LATTICE + 1.0));
    m->shift_v = (float)(LATTICE * ceil(reach * m->inv_cell_across / LATTICE + 1.0));
}

static void random_unit(const draw_key *key, int k, float out[3]) {
    /* uniform direction on the sphere from two draws */
    double z = uniform(key, k, -1.0, 1.0), phi = uniform(key, k + 1, 0.0, 2.0 * M_PI);
    double r = sqrt(1.0 - z * z);
    out[0] = (float)(r * cos(phi));
    out[1] = (float)(r * sin(phi));
    out[2] = (float)z;
}

/* Background material from draws 0..19. */
static void draw_background(const draw_key *key, material *m) {
    float chroma_dir[3], dir[3];
    random_unit(key, 0, chroma_dir);
    double mean_dir = (chroma_dir[0] + chroma_dir[1] + chroma_dir[2]) / 3.0;
    double level = uniform(key, 2, 60.0, 180.0), chroma = uniform(key, 3, 0.0, 50.0);
    for (int c = 0; c < 3; c++)
        m->base[c] = (float)(level + chroma * (chroma_dir[c] - mean_dir));
    random_unit(key, 4, dir);
    double amp_main = uniform(key, 6, 25.0, 55.0), norm = 0.0;
    double axis[3];
    for (int c = 0; c < 3; c++) {
        axis[c] = 0.7 / sqrt(3.0) + 0.5 * dir[c]; /* mostly luminance, tinted */
        norm += axis[c] * axis[c];
    }
    for (int c = 0; c < 3; c++)
        m->axis_main[c] = (float)(amp_main * axis[c] / sqrt(norm));
    random_unit(key, 7, dir);
    double amp_fine = uniform(key, 9, 6.0, 20.0);
    for (int c = 0; c < 3; c++)
        m->axis_fine[c] = (float)(amp_fine * dir[c]);
    double theta = uniform(key, 10, 0.0, M_PI);
    m->cos_t = (float)cos(theta);
    m->sin_t = (float)sin(theta);
    double cell = uniform(key, 11, 10.0, 28.0), stretch = uniform(key, 12, 1.0, 3.0);
    m->inv_cell_along = (float)(1.0 / (cell * stretch));
    m->inv_cell_across = (float)(1.0 / cell);
    m->inv_cell_fine = (float)(1.0 / uniform(key, 13, 4.0, 10.0));
    m->sharpness = (float)uniform(key, 14, 1.5, 5.0);
    m->grain = (float)uniform(key, 15, 2.0, 7.0);
}

/* The object material: the background's with small changes (draws 20..39). */
static void draw_object_material(const draw_key *key, const material *bg, material *m) {
    *m = *bg;
    double sign = draw(key, 20) < 0.5 ? -1.0 : 1.0;
    double theta = atan2(bg->sin_t, bg->cos_t) + sign * uniform(key, 21, 20.0, 60.0) * M_PI / 180.0;
    m->cos_t = (float)cos(theta);
    m->sin_t = (float)sin(theta);
    double scale = exp((draw(key, 22) < 0.5 ? -1.0 : 1.0) * uniform(key, 23, 0.15, 0.4));
    double stretch = exp(uniform(key, 24, -0.3, 0.3));
    m->inv_cell_along = (float)(bg->inv_cell_along / (scale * stretch));
    m->inv_cell_across = (float)(bg->inv_cell_across / scale);
    m->inv_cell_fine = (float)(bg->inv_cell_fine / scale);
    m->sharpness = (float)(bg->sharpness * exp(uniform(key, 25, -0.3, 0.3)));
    double contrast = exp(uniform(key, 26, -0.15, 0.15));
    for (int c = 0; c < 3; c++) {
        m->axis_main[c] = (float)(bg->axis_main[c] * contrast);
        m->axis_fine[c] = (float)(bg->axis_fine[c] * contrast);
    }
    float dir[3];
    random_unit(key, 27, dir);
    double amp_main = sqrt((double)bg->axis_main[0] * bg->axis_main[0] +
                           (double)bg->axis_main[1] * bg->axis_main[1] +
                           (double)bg->axis_main[2] * bg->axis_main[2]);
    double shift = uniform(key, 29, 0.1, 0.3) * amp_main;
    for (int c = 0; c < 3; c++)
        m->base[c] = (float)(bg->base[c] + shift * dir[c]);
}

/* Blobs from draws 40.. (10 per object). Returns the number of objects. */
static int draw_blobs(const draw_key *key, int size, blob *blobs) {
    double pick = draw(key, 40);
    int n = pick < 0.6 ? 1 : (pick < 0.9 ? 2 : 3);
    double coverage = uniform(key, 41, 0.06, 0.30), weights[MAX_OBJECTS], total = 0.0;
    for (int j = 0; j < n; j++) {
        weights[j] = uniform(key, 42 + j, 0.5, 1.5);
        total += weights[j];
    }
    for (int j = 0; j < n; j++) {
        blob *b = &blobs[j];
        int k0 = 50 + 20 * j;
        double sum_sq = 0.0, sum_abs = 0.0;
        for (int k = 0; k < 4; k++) {
            double limit = k == 0 ? 0.3 : 0.25 / (k + 2);
            double a = uniform(key, k0 + 2 * k, -limit, limit);
            double phase = uniform(key, k0 + 2 * k + 1, 0.0, 2.0 * M_PI);
            b->a_cos[k] = (float)(a * cos(phase));
            b->a_sin[k] = (float)(a * sin(phase));
            sum_sq += a * a;
            sum_abs += fabs(a);
        }
        /* area of r(phi)^2 / 2 over phi: pi R^2 (1 + sum a_k^2 / 2) */
        double area = coverage * weights[j] / total * (double)size * size;
        b->radius = (float)sqrt(area / (M_PI * (1.0 + 0.5 * sum_sq)));
        b->reach = (float)(b->radius * (1.0 + sum_abs));
        double margin = 0.9 * fmin(b->radius, 0.5 * size);
        b->cx = (float)uniform(key, k0 + 8, margin, size - margin);
        b->cy = (float)uniform(key, k0 + 9, margin, size - margin);
        b->offset_u = (float)uniform(key, k0 + 10, 0.0, LATTICE);
        b->offset_v = (float)uniform(key, k0 + 11, 0.0, LATTICE);
    }
    return n;
}

static int inside_blob(const blob *b, float px, float py) {
    float dx = px - b->cx, dy = py - b->cy;
    float d2 = dx * dx + dy * dy;
    if (d2 > b->reach * b->reach)
        return 0;
    float d = sqrtf(d2);
    if (d < 1e-6f)
        return 1;
    /* cos(k phi + p) = cos(k phi) cos p - sin(k phi) sin p, powers of e^{i phi} */
    float c1 = dx / d, s1 = dy / d;
    float ck = c1 * c1 - s1 * s1, sk = 2.0f * c1 * s1; /* k = 2 */
    float r = 1.0f;
    for (int k = 0; k < 4; k++) {
        r += b->a_cos[k] * ck - b->a_sin[k] * sk;
        float next_c = ck * c1 - sk * s1, next_s = sk * c1 + ck * s1;
        ck = next_c;
        sk = next_s;
    }
    return d < b->radius * r;
}

static inline uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

static inline uint8_t to_u8(float v) {
    v += 0.5f;
    return v <= 0.0f ? 0 : (v >= 255.0f ? 255 : (uint8_t)v);
}

typedef struct {
    int size;
    uint64_t seed, stream;
    int64_t first_index;
    uint8_t *images, *masks;
    atomic_int failed;
} synth_job;

static void make_image(const synth_job *job, int64_t i, float *tables, uint8_t *labels) {
    int size = job->size;
    draw_key key = {job->seed, SYN_STREAM_BASE ^ (job->stream * 0xD1B54A32D192ED03ull),
                    (uint64_t)(job->first_index + i)};
    material bg, obj;
    draw_background(&key, &bg);
    draw_object_material(&key, &bg, &obj);
    size_t table_floats = (size_t)TABLES_PER_MATERIAL * LATTICE * LATTICE;
    uint64_t lattice_seed = cx_rng_u64(key.seed, key.stream ^ 0x6C61747469636Full, key.index);
    fill_lattice(tables, table_floats, lattice_seed);
    fill_lattice(tables + table_floats, table_floats, lattice_seed ^ 0x5DEECE66Dull);
    set_shifts(&bg, size);
    set_shifts(&obj, size);
    bg.tables = tables;
    obj.tables = tables + table_floats;
    blob blobs[MAX_OBJECTS];
    int n_blobs = draw_blobs(&key, size, blobs);
    double light_angle = uniform(&key, 120, 0.0, 2.0 * M_PI), light = uniform(&key, 121, 0.0, 0.3);
    float light_x = (float)(light * cos(light_angle) / size), light_y = (float)(light * sin(light_angle) / size);
    float bg_u = (float)uniform(&key, 122, 0.0, LATTICE), bg_v = (float)uniform(&key, 123, 0.0, LATTICE);
    uint32_t grain_key = (uint32_t)cx_rng_u64(key.seed, key.stream ^ 0x677261696Eull, key.index);

    /* labels: 0 background, j + 1 object j (later objects paint over earlier ones) */
    memset(labels, 0, (size_t)size * size);
    for (int j = 0; j < n_blobs; j++) {
        const blob *b = &blobs[j];
        int y0 = (int)floorf(b->cy - b->reach), y1 = (int)ceilf(b->cy + b->reach);
        int x0 = (int)floorf(b->cx - b->reach), x1 = (int)ceilf(b->cx + b->reach);
        y0 = y0 < 0 ? 0 : y0, x0 = x0 < 0 ? 0 : x0;
        y1 = y1 > size ? size : y1, x1 = x1 > size ? size : x1;
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++)
                if (inside_blob(b, x + 0.5f, y + 0.5f))
                    labels[(size_t)y * size + x] = (uint8_t)(j + 1);
    }
    uint8_t *img = job->images + (size_t)i * size * size * 3;
    uint8_t *mask = job->masks + (size_t)i * size * size;
    for (int y = 0; y < size; y++) {
        for (int x = 0; x < size; x++) {
            size_t p = (size_t)y * size + x;
            float px = x + 0.5f, py = y + 0.5f, rgb[3];
            int label = labels[p];
            if (label)
                shade(&obj, px, py, blobs[label - 1].offset_u, blobs[label - 1].offset_v, rgb);
            else
                shade(&bg, px, py, bg_u, bg_v, rgb);
            float lighting = 1.0f + light_x * (px - 0.5f * size) + light_y * (py - 0.5f * size);
            uint32_t h = hash32(grain_key ^ (uint32_t)p * 0x9E3779B1u);
            float grain = (label ? obj.grain : bg.grain) * ((float)(h & 0xFFFF) * (2.0f / 65535.0f) - 1.0f);
            for (int c = 0; c < 3; c++)
                img[3 * p + c] = to_u8(rgb[c] * lighting + grain);
            mask[p] = label ? 255 : 0;
        }
    }
}

static void synth_task(void *ctx, int64_t begin, int64_t end) {
    synth_job *job = ctx;
    size_t table_floats = (size_t)2 * TABLES_PER_MATERIAL * LATTICE * LATTICE;
    size_t label_floats = ((size_t)job->size * job->size + sizeof(float) - 1) / sizeof(float);
    float *tables = cx_scratch(0, table_floats);
    float *labels = cx_scratch(1, label_floats);
    if (!tables || !labels) {
        atomic_store(&job->failed, 1);
        return;
    }
    for (int64_t i = begin; i < end; i++)
        make_image(job, i, tables, (uint8_t *)labels);
}

cx_status cx_synthetic(int64_t n, int size, uint64_t seed, uint64_t stream, int64_t first_index,
                       uint8_t *images, uint8_t *masks) {
    if (n < 0 || size < 8 || size > 8192)
        return cx_fail(CX_EINVAL, "synthetic: need n >= 0 and 8 <= size <= 8192, got n=%lld size=%d",
                       (long long)n, size);
    synth_job job = {.size = size, .seed = seed, .stream = stream, .first_index = first_index,
                     .images = images, .masks = masks};
    atomic_init(&job.failed, 0);
    cx_parallel_for(n, 1, synth_task, &job);
    if (atomic_load(&job.failed))
        return cx_fail(CX_ENOMEM, "synthetic: no memory for the per-thread texture tables");
    return CX_OK;
}
