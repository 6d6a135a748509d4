#[cachelet_macros::read("get_user")]
async fn get_user(id: u64, #[cachelet(rename = "id")] user_id: u64) -> Result<u64, String> {
    Ok(id + user_id)
}

fn main() {}
