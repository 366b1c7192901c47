package engine

import (
	"context"

	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// indexStore is the store of one compiled policy: OPA's in-memory store of
// the index's data document, read-only, with reads of one table entry
// (data.idx.exact["h:443"] and the like, the only reads a decision makes)
// answered from the index's Go maps. The in-memory store answers them
// too, but walks the document from its root and allocates a lookup key
// for every step; this answer is the same term, without allocating.
// Everything else (other reads, a missing entry, transactions, policies)
// goes to the in-memory store.
type indexStore struct {
	storage.Store
	tables map[string]map[string]slot
}

// newIndexStore returns the store of x.
func newIndexStore(x *index) *indexStore {
	return &indexStore{Store: inmem.NewFromASTObject(x.data), tables: x.tables}
}

// Read implements storage.Store.
func (s *indexStore) Read(ctx context.Context, txn storage.Transaction, path storage.Path) (any, error) {
	if len(path) == 3 && path[0] == "idx" {
		if e, ok := s.tables[path[1]][path[2]]; ok {
			return e.value.Value, nil
		}
	}
	return s.Store.Read(ctx, txn, path)
}
