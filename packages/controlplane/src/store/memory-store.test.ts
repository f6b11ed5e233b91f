import { runStoreContract } from './store-contract.js';
import { MemoryStore } from './memory-store.js';

runStoreContract('memory', () => Promise.resolve(new MemoryStore()), { fresh: true });
