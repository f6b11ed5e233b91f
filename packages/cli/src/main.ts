export async function main(argv: readonly string[]): Promise<number> {
  await Promise.resolve();
  process.stdout.write(`palisade ${argv.join(' ')}\n`);
  return 0;
}
