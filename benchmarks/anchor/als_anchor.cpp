// A plain C++ ALS epoch of rec's explicit `features` step at K = 10, the speed anchor of the
// engine issue: the same user and movie steps as rec's fused kernel (each row's Gram of
// [x, 1] and its right-hand side in one pass over the row's ratings, float accumulation in
// 16-lane vectors, the (K+1) x (K+1) Cholesky in double), with nothing else around them.
// It reads the rows that benchmarks/anchor_speed.py writes and prints one line per epoch.
//
//   g++ -O3 -march=native -fopenmp -o als_anchor als_anchor.cpp
//   OMP_NUM_THREADS=2 ./als_anchor DIR EPOCHS [SAVE]
//
// DIR holds by_user.bin and by_item.bin (each: int64 n_rows, int64 n_cols, int64 nnz, then
// int64 ptr[n_rows + 1], int32 col[nnz], float32 val[nnz]) and prior.bin (int64 n_items,
// float32 mean[n_items][K + 1]: each movie's prior mean of [v, c]). The data term's weight is
// lam, the prior precisions tau (factors) and gamma (bias), as rec's defaults; mu is the mean
// training rating. With SAVE, the last epoch's [u, b] and [v, c] are written there as users.bin
// and items.bin (float32, 16 a row: the tests check them against a dense solve). The movie prior means are held fixed (rec's genre step, which moves them,
// costs a few ms an epoch at this shape and is not timed here).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

constexpr int K = 10;
constexpr int D = K + 1;   // unknowns per row: the factors and the bias
constexpr int L = 16;      // lanes: [x (K), 1, y, 0 ...]
constexpr int PREFETCH = 8;  // ratings ahead

struct Rows {
  int64_t n_rows = 0, n_cols = 0, nnz = 0;
  std::vector<int64_t> ptr;
  std::vector<int32_t> col;
  std::vector<float> val;
};

static void read_exact(FILE* f, void* out, size_t bytes, const std::string& path) {
  if (fread(out, 1, bytes, f) != bytes) {
    fprintf(stderr, "%s: file ends early\n", path.c_str());
    exit(1);
  }
}

static Rows read_rows(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) { fprintf(stderr, "cannot open %s\n", path.c_str()); exit(1); }
  Rows r;
  int64_t head[3];
  read_exact(f, head, sizeof head, path);
  r.n_rows = head[0]; r.n_cols = head[1]; r.nnz = head[2];
  r.ptr.resize(r.n_rows + 1); r.col.resize(r.nnz); r.val.resize(r.nnz);
  read_exact(f, r.ptr.data(), r.ptr.size() * 8, path);
  read_exact(f, r.col.data(), r.col.size() * 4, path);
  read_exact(f, r.val.data(), r.val.size() * 4, path);
  fclose(f);
  return r;
}

// The row's Gram of z = [x, 1, y] (lanes D of rows 0..K: the right-hand side), over its
// ratings: AVX-512, the K + 1 accumulators held in registers while the ratings stream past.
static inline void gram(const Rows& r, const std::vector<float>& other, int64_t m,
                        float (*g)[L]) {
#ifdef __AVX512F__
  __m512 acc[D];
#pragma GCC unroll 16
  for (int a = 0; a < D; ++a) acc[a] = _mm512_setzero_ps();
  const int64_t end = r.ptr[m + 1];
  for (int64_t p = r.ptr[m]; p < end; ++p) {
    if (p + PREFETCH < r.nnz)  // the table's rows are read at random: ask for them early
      _mm_prefetch(reinterpret_cast<const char*>(&other[size_t(r.col[p + PREFETCH]) * L]),
                   _MM_HINT_T0);
    const float* x = &other[size_t(r.col[p]) * L];
    __m512 z = _mm512_loadu_ps(x);
    z = _mm512_mask_mov_ps(z, __mmask16(1u << D), _mm512_set1_ps(r.val[p] - x[D]));
#pragma GCC unroll 16
    for (int a = 0; a < K; ++a) acc[a] = _mm512_fmadd_ps(_mm512_set1_ps(x[a]), z, acc[a]);
    acc[K] = _mm512_add_ps(acc[K], z);  // x's lane K is 1
  }
#pragma GCC unroll 16
  for (int a = 0; a < D; ++a) _mm512_storeu_ps(g[a], acc[a]);
#else
  for (int a = 0; a < D; ++a)
    for (int l = 0; l < L; ++l) g[a][l] = 0.0f;
  for (int64_t p = r.ptr[m]; p < r.ptr[m + 1]; ++p) {
    float z[L];
    const float* x = &other[size_t(r.col[p]) * L];
    for (int l = 0; l < L; ++l) z[l] = x[l];
    z[D] = r.val[p] - x[D];  // y = r - offset
    for (int a = 0; a < D; ++a)
      for (int l = 0; l < L; ++l) g[a][l] += z[a] * z[l];
  }
#endif
}

// Every row's [theta; bias] from its ratings against the other side's table `other`
// (rows of L floats: x, then 1, then the offset mu + the other side's bias, zeros after).
static void step(const Rows& r, const std::vector<float>& other, const float* prior,
                 double lam, const double* reg, std::vector<float>& out) {
#pragma omp parallel for schedule(dynamic, 512)
  for (int64_t m = 0; m < r.n_rows; ++m) {
    alignas(64) float g[D][L];
    gram(r, other, m, g);
    float* row = &out[size_t(m) * L];
    if (r.ptr[m] == r.ptr[m + 1]) {  // no ratings: the prior mean
      for (int a = 0; a < D; ++a) row[a] = prior ? prior[m * D + a] : 0.0f;
      continue;
    }
    double a[D][D], b[D];
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) a[i][j] = lam * g[j][i];
      a[i][i] += reg[i];
      b[i] = lam * g[i][D] + (prior ? reg[i] * prior[m * D + i] : 0.0);
    }
    for (int j = 0; j < D; ++j) {  // Cholesky, lower triangle in place
      double s = a[j][j];
      for (int k = 0; k < j; ++k) s -= a[j][k] * a[j][k];
      const double d = std::sqrt(s);
      a[j][j] = d;
      for (int i = j + 1; i < D; ++i) {
        double t = a[i][j];
        for (int k = 0; k < j; ++k) t -= a[i][k] * a[j][k];
        a[i][j] = t / d;
      }
    }
    for (int i = 0; i < D; ++i) {  // L w = b, then L^T theta = w
      double t = b[i];
      for (int k = 0; k < i; ++k) t -= a[i][k] * b[k];
      b[i] = t / a[i][i];
    }
    for (int i = D - 1; i >= 0; --i) {
      double t = b[i];
      for (int k = i + 1; k < D; ++k) t -= a[k][i] * b[k];
      b[i] = t / a[i][i];
    }
    for (int i = 0; i < D; ++i) row[i] = float(b[i]);
  }
}

// A side's solutions [x, bias] as the table the other side's step reads: [x, 1, mu + bias].
static void as_table(const std::vector<float>& solved, double mu, std::vector<float>& table,
                     int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float* s = &solved[size_t(i) * L];
    float* t = &table[size_t(i) * L];
    for (int k = 0; k < K; ++k) t[k] = s[k];
    t[K] = 1.0f;
    t[D] = float(mu + s[K]);
    for (int l = D + 1; l < L; ++l) t[l] = 0.0f;
  }
}

static double squared_error(const Rows& by_user, const std::vector<float>& users,
                            const std::vector<float>& items, double mu) {
  double sse = 0.0;
#pragma omp parallel for schedule(dynamic, 512) reduction(+ : sse)
  for (int64_t m = 0; m < by_user.n_rows; ++m) {
    const float* u = &users[size_t(m) * L];
    for (int64_t p = by_user.ptr[m]; p < by_user.ptr[m + 1]; ++p) {
      const float* v = &items[size_t(by_user.col[p]) * L];
      float e = by_user.val[p] - float(mu) - u[K] - v[K];
      for (int k = 0; k < K; ++k) e -= u[k] * v[k];
      sse += double(e) * e;
    }
  }
  return sse;
}

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s DIR EPOCHS [SAVE]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int epochs = atoi(argv[2]);
  const Rows by_user = read_rows(dir + "/by_user.bin"), by_item = read_rows(dir + "/by_item.bin");
  std::vector<float> prior;
  {
    const std::string path = dir + "/prior.bin";
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path.c_str()); return 1; }
    int64_t n;
    read_exact(f, &n, 8, path);
    prior.resize(size_t(n) * D);
    read_exact(f, prior.data(), prior.size() * 4, path);
    fclose(f);
  }
  double mu = 0.0;
  for (float v : by_user.val) mu += v;
  mu /= double(by_user.nnz);
  const double lam = 1.0, tau = 15.0, gamma = 3.0;
  double reg[D];
  for (int k = 0; k < K; ++k) reg[k] = tau;
  reg[K] = gamma;
  const int64_t n_users = by_user.n_rows, n_items = by_item.n_rows;
  std::vector<float> users(size_t(n_users) * L, 0.0f), items(size_t(n_items) * L, 0.0f);
  std::vector<float> user_table(size_t(n_users + 1) * L, 0.0f);
  std::vector<float> item_table(size_t(n_items + 1) * L, 0.0f);
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  for (int64_t n = 0; n < n_items; ++n)
    for (int k = 0; k < K; ++k) items[size_t(n) * L + k] = normal(rng);
  printf("rows: %lld users, %lld movies, %lld ratings, K = %d\n", (long long)n_users,
         (long long)n_items, (long long)by_user.nnz, K);
  for (int e = 0; e < epochs; ++e) {
    const auto t0 = std::chrono::steady_clock::now();
    as_table(items, mu, item_table, n_items);
    step(by_user, item_table, nullptr, lam, reg, users);
    as_table(users, mu, user_table, n_users);
    step(by_item, user_table, prior.data(), lam, reg, items);
    const auto t1 = std::chrono::steady_clock::now();
    const double sse = squared_error(by_user, users, items, mu);
    const auto t2 = std::chrono::steady_clock::now();
    printf("epoch %d steps %.4f s loss %.4f s train RMSE %.4f\n", e,
           std::chrono::duration<double>(t1 - t0).count(),
           std::chrono::duration<double>(t2 - t1).count(), std::sqrt(sse / by_user.nnz));
    fflush(stdout);
  }
  if (argc == 4) {
    const std::string save = argv[3];
    for (const auto& [name, table] : {std::pair{"/users.bin", &users}, {"/items.bin", &items}}) {
      FILE* f = fopen((save + name).c_str(), "wb");
      if (!f || fwrite(table->data(), 4, table->size(), f) != table->size()) {
        fprintf(stderr, "cannot write %s%s\n", save.c_str(), name);
        return 1;
      }
      fclose(f);
    }
  }
  return 0;
}
