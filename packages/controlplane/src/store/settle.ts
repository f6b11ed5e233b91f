// Runs synchronous adapter code and reports its failure as a rejection: the port promises that no
// method throws synchronously, so `store.get(k).catch(...)` always catches.

export function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
}
