// The request reader the addon uses (native/addon/wire.cc: one pass, bytes → WireMessage, then
// prepare_wire: validation and the feature bundle) against libprotobuf on the same bytes
// (docs/wire.md "Why a small reader, not libprotobuf"). Built and run by bench/wire-native/run.sh
// (`npm run bench:wire-native`), which generates the C++ classes with protoc and the requests with
// bench/wire-native/requests.ts.
//
//   compare DIR [rounds] [ms per cell]
//
// Per request size (RankRequest of the demo config with 10, 1,000 and 10,000 candidates), the
// median over rounds of the ns per parse of:
//   wire parse            parse_wire (what the addon does first)
//   wire parse+prepare    parse_wire + prepare_wire (the whole native request path before the run)
//   pb heap               RankRequest::ParseFromArray into a message on the heap, made and freed
//                         per parse
//   pb reused             ParseFromArray into one message kept across parses (Clear() keeps the
//                         capacity of repeated fields)
//   pb arena              ParseFromArray into a message on an Arena that starts in a preallocated
//                         block, Reset() per parse (no malloc in the steady state)
//   pb arena+prepare      pb arena, then the parsed message copied into a WireMessage and
//                         prepare_wire: what the addon would do with libprotobuf and the same
//                         checks (an upper bound: a prepare written against the generated classes
//                         would skip the copy of the repeated fields, not the rest)
// The cells of a round run in a rotated order, so drift on a shared machine does not favour one.
#include <google/protobuf/arena.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "adrank/v1/adrank.pb.h"
#include "addon/wire.h"

namespace {

using adrank::wire::Kind;
using adrank::wire::WireMessage;
using adrank::wire::WireSchema;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(2);
  }
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

WireSchema read_schema(const std::string& path) {
  WireSchema s;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string key, word;
    l >> key;
    std::vector<std::string> words;
    while (l >> word) words.push_back(word);
    const auto num = [&] { return words.empty() ? 0.0 : std::atof(words[0].c_str()); };
    if (key == "surfaces") s.surfaces = words;
    else if (key == "tasks") s.tasks = words;
    else if (key == "user_sparse") s.user_sparse = words;
    else if (key == "user_dense") s.user_dense = uint32_t(num());
    else if (key == "user_embedding_dim") s.user_embedding_dim = uint32_t(num());
    else if (key == "targeting_dims") s.targeting_dims = uint32_t(num());
    else if (key == "seq_max_len") s.seq_max_len = uint32_t(num());
    else if (key == "seq_actions") s.seq_actions = uint32_t(num());
    else if (key == "reserve_price") s.reserve_price = float(num());
    else if (key == "model_name") s.model_name = words.empty() ? "" : words[0];
  }
  return s;
}

// The parsed message as the addon's reader would have produced it (map entries in the map's order).
void to_wire(const adrank::v1::RankRequest& r, WireMessage* m) {
  m->request_id = r.request_id();
  m->surface = r.surface();
  m->model_version = r.model_version();
  m->has_user = r.has_user();
  const auto& u = r.user();
  m->dense.assign(u.dense().begin(), u.dense().end());
  m->embedding.assign(u.embedding().begin(), u.embedding().end());
  m->sparse.clear();
  for (const auto& [name, list] : u.sparse()) m->sparse.emplace_back(name, std::vector<int64_t>(list.ids().begin(), list.ids().end()));
  m->seq_items.assign(u.sequence().item_ids().begin(), u.sequence().item_ids().end());
  m->seq_actions.assign(u.sequence().actions().begin(), u.sequence().actions().end());
  m->targeting.assign(r.targeting().begin(), r.targeting().end());
  m->excluded_advertisers.assign(r.exclusions().advertiser_ids().begin(), r.exclusions().advertiser_ids().end());
  m->excluded_ads.assign(r.exclusions().ad_ids().begin(), r.exclusions().ad_ids().end());
  m->k = r.k();
  m->cap = r.per_advertiser_cap();
  m->task_weights.clear();
  for (const auto& [name, w] : r.task_weights()) m->task_weights.emplace_back(name, w);
  m->has_ranking = r.has_ranking();
  m->mode = r.ranking().mode();
  m->partitions = r.ranking().partitions();
  m->has_reserve = r.has_reserve();
  m->reserve = r.reserve();
  m->candidates.assign(r.candidate_ad_ids().begin(), r.candidate_ad_ids().end());
  m->price = r.price();
  m->allow_fallback = r.has_allow_fallback() ? int(r.allow_fallback()) : -1;
}

volatile size_t g_sink = 0;

// ns per call of fn, calls repeated for about `ms` milliseconds (after one call to warm up)
double time_cell(const std::function<void()>& fn, double ms) {
  using clock = std::chrono::steady_clock;
  fn();
  size_t n = 0;
  const auto t0 = clock::now();
  auto t = t0;
  do {
    for (int i = 0; i < 16; ++i) fn();
    n += 16;
    t = clock::now();
  } while (std::chrono::duration<double, std::milli>(t - t0).count() < ms);
  return std::chrono::duration<double, std::nano>(t - t0).count() / double(n);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: compare DIR [rounds] [ms per cell]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 15;
  const double ms = argc > 3 ? std::atof(argv[3]) : 40;
  const WireSchema schema = read_schema(dir + "/schema.txt");
  std::printf("| candidates | bytes | wire parse ns | wire parse+prepare ns | pb heap ns | pb reused ns | pb arena ns | pb arena+prepare ns | pb arena / wire parse | pb arena+prepare / wire parse+prepare |\n");
  std::printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const int n : {10, 1000, 10000}) {
    const std::string bytes = read_file(dir + "/rank" + std::to_string(n) + ".bin");
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    const size_t len = bytes.size();

    // Both readers must agree before either is timed.
    {
      const WireMessage a = adrank::wire::parse_wire(p, len, Kind::kRank);
      adrank::v1::RankRequest r;
      if (!r.ParseFromArray(p, int(len))) {
        std::fprintf(stderr, "libprotobuf refused rank%d.bin\n", n);
        return 1;
      }
      WireMessage b;
      to_wire(r, &b);
      adrank::wire::Prepared pa, pb;
      adrank::wire::Refusal why;
      if (!adrank::wire::prepare_wire(a, Kind::kRank, schema, 100000, &pa, &why) ||
          !adrank::wire::prepare_wire(b, Kind::kRank, schema, 100000, &pb, &why)) {
        std::fprintf(stderr, "rank%d.bin refused: %s\n", n, why.message.c_str());
        return 1;
      }
      if (pa.bundle_len != pb.bundle_len || !std::equal(pa.bundle.begin(), pa.bundle.begin() + (pa.bundle_len + 7) / 8, pb.bundle.begin())) {
        std::fprintf(stderr, "rank%d.bin: the two readers' feature bundles differ\n", n);
        return 1;
      }
    }

    std::vector<char> block(size_t(4) << 20);
    google::protobuf::ArenaOptions options;
    options.initial_block = block.data();
    options.initial_block_size = block.size();
    google::protobuf::Arena arena(options);
    adrank::v1::RankRequest reused;
    WireMessage scratch;
    adrank::wire::Prepared prep;
    adrank::wire::Refusal why;

    const std::vector<std::function<void()>> cells = {
        [&] { g_sink += adrank::wire::parse_wire(p, len, Kind::kRank).candidates.size(); },
        [&] {
          const WireMessage m = adrank::wire::parse_wire(p, len, Kind::kRank);
          adrank::wire::Prepared out;
          g_sink += adrank::wire::prepare_wire(m, Kind::kRank, schema, 100000, &out, &why) ? out.bundle_len : 0;
        },
        [&] {
          adrank::v1::RankRequest r;
          g_sink += r.ParseFromArray(p, int(len)) ? size_t(r.candidate_ad_ids_size()) : 0;
        },
        [&] { g_sink += reused.ParseFromArray(p, int(len)) ? size_t(reused.candidate_ad_ids_size()) : 0; },
        [&] {
          auto* r = google::protobuf::Arena::CreateMessage<adrank::v1::RankRequest>(&arena);
          g_sink += r->ParseFromArray(p, int(len)) ? size_t(r->candidate_ad_ids_size()) : 0;
          arena.Reset();
        },
        [&] {
          auto* r = google::protobuf::Arena::CreateMessage<adrank::v1::RankRequest>(&arena);
          if (r->ParseFromArray(p, int(len))) {
            to_wire(*r, &scratch);
            g_sink += adrank::wire::prepare_wire(scratch, Kind::kRank, schema, 100000, &prep, &why) ? prep.bundle_len : 0;
          }
          arena.Reset();
        },
    };
    std::vector<std::vector<double>> ns(cells.size());
    for (int round = 0; round < rounds; ++round)
      for (size_t j = 0; j < cells.size(); ++j) {
        const size_t c = (j + size_t(round)) % cells.size();
        ns[c].push_back(time_cell(cells[c], ms));
      }
    std::vector<double> med;
    for (auto& v : ns) {
      std::sort(v.begin(), v.end());
      med.push_back(v[v.size() / 2]);
    }
    std::printf("| %d | %zu | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f |\n", n, len, med[0], med[1], med[2], med[3], med[4], med[5],
                med[4] / med[0], med[5] / med[1]);
  }
  return 0;
}
