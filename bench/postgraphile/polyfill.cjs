// PostGraphile 5 asks for Node 22; on Node 20 the one thing it misses is Promise.withResolvers (Node 22's).
// Loaded with `node -r ./polyfill.cjs`; a no-op on Node 22.
Promise.withResolvers ??= function () {
    let resolve, reject;
    const promise = new Promise((a, b) => {
        resolve = a;
        reject = b;
    });
    return { promise, resolve, reject };
};
