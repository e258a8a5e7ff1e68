#include "infer/prefix_cache.h"

#include <algorithm>
#include <map>

namespace ssm {

struct PrefixCache::Node {
  std::vector<int32_t> edge;  // the tokens from the parent to this node
  Node* parent = nullptr;
  std::map<int32_t, std::unique_ptr<Node>> children;  // by the first token of their edge
  std::unique_ptr<Snapshot> snapshot;
  std::list<Node*>::iterator lru;  // valid while snapshot is set
};

PrefixCache::PrefixCache(int64_t budget_bytes) : root_(std::make_unique<Node>()), budget_(budget_bytes) {}
PrefixCache::~PrefixCache() = default;

PrefixCache::Hit PrefixCache::find(std::span<const int32_t> tokens, int64_t align) {
  Hit hit;
  Node* node = root_.get();
  size_t pos = 0;
  while (pos < tokens.size()) {
    const auto it = node->children.find(tokens[pos]);
    if (it == node->children.end()) break;
    const std::vector<int32_t>& edge = it->second->edge;
    if (pos + edge.size() > tokens.size() || !std::equal(edge.begin(), edge.end(), tokens.begin() + ptrdiff_t(pos)))
      break;
    pos += edge.size();
    node = it->second.get();
    const bool usable = pos % size_t(align) == 0 || pos == tokens.size();
    if (node->snapshot && usable) hit = {int64_t(pos), node->snapshot.get()};
  }
  if (hit.snapshot) {
    // Walk back to the hit's node to mark it used: the deepest node with a snapshot at hit.length.
    while (node->snapshot.get() != hit.snapshot) node = node->parent;
    lru_.splice(lru_.begin(), lru_, node->lru);
  }
  return hit;
}

void PrefixCache::insert(std::span<const int32_t> tokens, Snapshot snapshot) {
  const int64_t size = snapshot.bytes();
  if (size > budget_ || tokens.empty()) return;
  Node* node = root_.get();
  size_t pos = 0;
  while (pos < tokens.size()) {
    auto it = node->children.find(tokens[pos]);
    if (it == node->children.end()) {
      auto child = std::make_unique<Node>();
      child->edge.assign(tokens.begin() + ptrdiff_t(pos), tokens.end());
      child->parent = node;
      node = (node->children[tokens[pos]] = std::move(child)).get();
      break;
    }
    Node* child = it->second.get();
    const auto rest = tokens.subspan(pos);
    const size_t common = size_t(std::mismatch(child->edge.begin(), child->edge.end(), rest.begin(), rest.end()).first -
                                 child->edge.begin());
    if (common < child->edge.size()) {  // split the edge: a new node at the divergence owns the child
      auto middle = std::make_unique<Node>();
      middle->edge.assign(child->edge.begin(), child->edge.begin() + ptrdiff_t(common));
      middle->parent = node;
      child->edge.erase(child->edge.begin(), child->edge.begin() + ptrdiff_t(common));
      child->parent = middle.get();
      middle->children[child->edge[0]] = std::move(it->second);
      it->second = std::move(middle);
      child = it->second.get();
    }
    node = child;
    pos += common;
  }
  if (node->snapshot) {
    bytes_ -= node->snapshot->bytes();
    lru_.erase(node->lru);
    keep_spare(*node->snapshot);
  }
  node->snapshot = std::make_unique<Snapshot>(std::move(snapshot));
  bytes_ += size;
  lru_.push_front(node);
  node->lru = lru_.begin();
  while (bytes_ > budget_) evict(lru_.back());
}

void PrefixCache::keep_spare(Snapshot& snapshot) {
  if (spare_.mixers.empty() && !snapshot.state.mixers.empty() && snapshot.state.resizable())
    spare_ = std::move(snapshot.state);
}

void PrefixCache::evict(Node* node) {
  bytes_ -= node->snapshot->bytes();
  lru_.erase(node->lru);
  keep_spare(*node->snapshot);
  node->snapshot.reset();
  // Remove the leaves left without a snapshot, then keep the path compressed.
  while (node != root_.get() && !node->snapshot && node->children.empty()) {
    Node* parent = node->parent;
    parent->children.erase(node->edge[0]);
    node = parent;
  }
  merge_with_child(node);
}

void PrefixCache::merge_with_child(Node* node) {
  if (node == root_.get() || node->snapshot || node->children.size() != 1) return;
  std::unique_ptr<Node> child = std::move(node->children.begin()->second);
  child->edge.insert(child->edge.begin(), node->edge.begin(), node->edge.end());
  child->parent = node->parent;
  node->parent->children[child->edge[0]] = std::move(child);  // replaces (and frees) node
}

}  // namespace ssm
