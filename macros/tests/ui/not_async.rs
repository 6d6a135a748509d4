#[cachelet_macros::read("get_user")]
fn get_user(user_id: u64) -> Result<u64, String> {
    Ok(user_id)
}

fn main() {}
