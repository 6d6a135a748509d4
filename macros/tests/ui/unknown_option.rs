#[cachelet_macros::read("get_user")]
async fn get_user(#[cachelet(skp)] db: &str, user_id: u64) -> Result<u64, String> {
    let _ = db;
    Ok(user_id)
}

fn main() {}
