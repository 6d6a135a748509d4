#[cachelet_macros::read("get_user")]
async fn get_user(user_id: &mut u64) -> Result<u64, String> {
    Ok(*user_id)
}

fn main() {}
