#include "detail/rollup.hpp"

#include "detail/sqlite.hpp"

namespace losslens::storage::detail {

namespace {
void bind_point(statement& st, int i, const storage::point& p, bool present) {
  if (!present) {
    st.bind_null(i).bind_null(i + 1).bind_null(i + 2);
    return;
  }
  st.bind(i, p.step).bind(i + 1, p.wall_time).bind(i + 2, p.value);
}

storage::point read_point(const statement& st, int i) {
  return {st.int64(i), st.real(i + 1), st.real(i + 2)};
}
}  // namespace

void bind_summary(statement& st, int first, const storage::bucket_summary& s) {
  st.bind(first, s.count)
      .bind(first + 1, s.nan_count)
      .bind(first + 2, s.pos_inf_count)
      .bind(first + 3, s.neg_inf_count);
  bind_point(st, first + 4, s.first, true);
  bind_point(st, first + 7, s.last, true);
  bind_point(st, first + 10, s.min, s.finite_count() > 0);
  bind_point(st, first + 13, s.max, s.finite_count() > 0);
  bind_point(st, first + 16, s.first_non_finite, s.non_finite_count() > 0);
}

storage::bucket_summary read_summary(const statement& st, int first) {
  storage::bucket_summary s;
  s.count = st.int64(first);
  s.nan_count = st.int64(first + 1);
  s.pos_inf_count = st.int64(first + 2);
  s.neg_inf_count = st.int64(first + 3);
  s.first = read_point(st, first + 4);
  s.last = read_point(st, first + 7);
  if (s.finite_count() > 0) {
    s.min = read_point(st, first + 10);
    s.max = read_point(st, first + 13);
  }
  if (s.non_finite_count() > 0) s.first_non_finite = read_point(st, first + 16);
  s.from_step = s.first.step;
  s.to_step = s.last.step;
  return s;
}

}  // namespace losslens::storage::detail
