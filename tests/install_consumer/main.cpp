// Feeds a NaN into an analyzer through the installed headers and library, and reads back an
// event record written with losslens::tfevents (which links protobuf).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

#include <losslens/analyzer.hpp>
#include <losslens/tfevents/event_reader.hpp>
#include <losslens/tfevents/event_writer.hpp>
#include <losslens/version.hpp>

int main(int argc, char** argv) {
  const char* usage =
      "usage: consumer\n\nFeeds a NaN into a losslens analyzer through the installed headers "
      "and library;\nexit status 0 when the finding comes out as expected.\n";
  if (argc > 1) {
    const bool help = std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0;
    std::fprintf(help ? stdout : stderr, "%s%s", help ? "" : "consumer: takes no arguments\n\n",
                 usage);
    return help ? 0 : 2;
  }
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
  std::istringstream file(losslens::tfevents::frame_record(
      losslens::tfevents::scalar_event("train/loss", 3, 1.5, 0.25f)));
  losslens::tfevents::event_reader reader(file, "consumer");
  losslens::tfevents::scalar_value v;
  if (!reader.next(v) || v.tag != "train/loss" || v.step != 3 || v.value != 0.25) {
    std::printf("event record did not read back\n");
    return 1;
  }
  std::printf("losslens %s: %s at step %lld\n", losslens::version_string,
              a.findings()[0].kind.c_str(), static_cast<long long>(a.findings()[0].first_step));
  return 0;
}
