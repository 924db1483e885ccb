// The app's model worker: the two lines the runtime-web README gives.
import { handleModelRequests } from "@sdpack/runtime-web/worker";
handleModelRequests();
