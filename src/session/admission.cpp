#include "session/admission.hpp"

#include <algorithm>

namespace pgw::session {

unsigned ClientAdmission::workers_for(int clients) const {
  return std::min(workers_, 1 + static_cast<unsigned>(std::max(clients, 0) / kClientsPerWorker));
}

unsigned ClientAdmission::place(unsigned accepting, unsigned in_use) {
  unsigned chosen = accepting < in_use ? accepting : 0;
  int fewest = clients_[chosen].load(std::memory_order_relaxed);
  for (unsigned w = 0; w < in_use && w < workers_; ++w) {
    const int on_worker = clients_[w].load(std::memory_order_relaxed);
    if (on_worker < fewest) {
      fewest = on_worker;
      chosen = w;
    }
  }
  clients_[chosen].fetch_add(1, std::memory_order_relaxed);
  return chosen;
}

int ClientAdmission::count() const {
  int total = 0;
  for (unsigned w = 0; w < workers_; ++w) total += clients_[w].load(std::memory_order_relaxed);
  return total;
}

bool ClientAdmission::admit_app(const std::string& application, int cap) {
  std::lock_guard lock(app_mutex_);
  int& count = app_clients_[application];
  if (count >= cap) {
    if (count == 0) app_clients_.erase(application);
    return false;
  }
  ++count;
  return true;
}

void ClientAdmission::release_app(const std::string& application) {
  std::lock_guard lock(app_mutex_);
  auto it = app_clients_.find(application);
  if (it != app_clients_.end() && --it->second <= 0) app_clients_.erase(it);
}

}  // namespace pgw::session
