/**
 * This process's log records kept in memory while a test runs (logtape configured with one
 * in-memory sink for the `tls-pass` loggers); `close()` restores the default configuration.
 * @module
 */
import { configure, type LogLevel, type LogRecord, reset } from "@logtape/logtape";

export interface CapturedLogs extends AsyncDisposable {
  /** Every record at `level` or above, in order; logging is synchronous, so poll it. */
  readonly records: LogRecord[];
  close(): Promise<void>;
}

export async function captureLogs(level: LogLevel): Promise<CapturedLogs> {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { mem: (r: LogRecord) => void records.push(r) },
    loggers: [
      { category: ["tls-pass"], lowestLevel: level, sinks: ["mem"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
  const close = () => reset();
  return { records, close, [Symbol.asyncDispose]: close };
}
