// Feeds a NaN into an analyzer through the installed headers and library.
#include <cmath>
#include <cstdio>

#include <losslens/analyzer.hpp>
#include <losslens/version.hpp>

int main() {
  losslens::analyzer a(losslens::sample_schema{});
  for (int i = 0; i < 10; ++i) {
    losslens::sample s;
    s.step = i;
    s.loss = i == 7 ? std::nan("") : 1.0;
    a.observe(s);
  }
  if (a.findings().size() != 1 || a.findings()[0].kind != "non_finite" ||
      a.findings()[0].first_step != 7) {
    std::printf("unexpected findings\n");
    return 1;
  }
  std::printf("losslens %s: %s at step %lld\n", losslens::version_string,
              a.findings()[0].kind.c_str(), static_cast<long long>(a.findings()[0].first_step));
  return 0;
}
