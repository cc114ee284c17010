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

ClientAdmission::Over ClientAdmission::admit_client(const std::string& database, int database_cap,
                                                    const std::string& user, int user_cap,
                                                    bool exempt) {
  std::lock_guard lock(client_mutex_);
  int& on_database = database_clients_[database];
  int& of_user = user_clients_[user];
  Over over = Over::none;
  if (!exempt && database_cap > 0 && on_database >= database_cap) {
    over = Over::database;
  } else if (!exempt && user_cap > 0 && of_user >= user_cap) {
    over = Over::user;
  }
  if (over == Over::none) {
    ++on_database;
    ++of_user;
    return over;
  }
  // Refused: no entry is left behind for a name nobody holds.
  if (on_database == 0) database_clients_.erase(database);
  if (of_user == 0) user_clients_.erase(user);
  return over;
}

void ClientAdmission::release_client(const std::string& database, const std::string& user) {
  std::lock_guard lock(client_mutex_);
  if (auto it = database_clients_.find(database); it != database_clients_.end()) {
    if (--it->second <= 0) database_clients_.erase(it);
  }
  if (auto it = user_clients_.find(user); it != user_clients_.end()) {
    if (--it->second <= 0) user_clients_.erase(it);
  }
}

std::map<std::string, int> ClientAdmission::clients_by_database() const {
  std::lock_guard lock(client_mutex_);
  return {database_clients_.begin(), database_clients_.end()};
}

std::map<std::string, int> ClientAdmission::clients_by_user() const {
  std::lock_guard lock(client_mutex_);
  return {user_clients_.begin(), user_clients_.end()};
}

}  // namespace pgw::session
