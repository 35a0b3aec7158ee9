//! An infinite loop. The platform's epoch deadline makes it yield every tick
//! and its wall-clock timeout ends it.

use wasmbase_sdk::{Handler, Request, Response};

struct Spin;

impl Handler for Spin {
    fn handle(_req: Request) -> Response {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
            if x == u64::MAX {
                break;
            }
        }
        Response::text(200, format!("{x}"))
    }
}

wasmbase_sdk::export!(Spin);
