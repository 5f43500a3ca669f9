// fauxqs on 127.0.0.1 only (its CLI binds every interface), on the port given (0: any free one).
// Prints the URL on its first line of output.
import { buildApp } from "fauxqs";

const app = buildApp({ logger: false });
const address = await app.listen({ port: Number(process.argv[2] ?? 0), host: "127.0.0.1" });
console.log(address);
